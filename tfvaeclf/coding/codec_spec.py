"""What a file must agree on with whoever reads it, checked in one place.

A `CodecSpec` is built once per loaded model (`from_model`, which
`model_dir.load` calls) or per bundle (`from_manifest`): the codec, evaluate,
the server and the board all pack and unpack files through it, and only
`tfvaeclf.coding.bitstream` spells their bytes. A one-image message (what a
board sends) holds the same strings without a header: its shapes, seed and
stream count are the spec's, and its CRC is keyed by the fingerprint.

Its fingerprint identifies the encoder side, which is what determines a
file's bytes: every variable the model's traced `compress` reads (the
encoder's weights and batch-norm statistics, trainable or frozen, and a
conditional coder's transforms), the coding tables, the coder's kind and
levels, the dither seed, and the image and latent shapes. A model that
shares its encoder side with another (a β-VAE's stage 2 head, a universal
rdc decoder on a frozen encoder) therefore reads the other's files, and a
model with another encoder side refuses them in one line. The model dir's
own fingerprint (`model.json`) still covers the whole model.

A file carries the dither seed it was coded with, and the receiver draws
the dither from that seed; the fingerprint holds the seed the encoder side
codes with by default, which is the one a message is coded with. A file's
image i takes dither index i; a message takes its counter, which the sender
increments so that consecutive messages never share a dither.

Imports without TensorFlow (a board builds its spec from the manifest);
`from_model` imports it when called.
"""

import dataclasses
import hashlib
import json

import numpy as np

from tfvaeclf.coding import bitstream

__all__ = ["CodecSpec", "FINGERPRINT_KEY", "fingerprint_of"]

# The manifest's key for the fingerprint (hex).
FINGERPRINT_KEY = "codec_fingerprint"


def fingerprint_of(description, tables, variables):
  """8 bytes of a JSON description, named tables (numpy arrays) and
  unnamed variables (TensorFlow's, hashed with their declared shapes); a
  model dir's fingerprint is computed the same way.

  Variables are hashed one by one and their hashes taken in sorted order:
  names vary per process, and the order moves when parts are frozen (Keras
  lists trainable weights first) or the code is reorganized.
  """
  digest = hashlib.sha256(json.dumps(description, sort_keys=True).encode())
  for name in sorted(tables):
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(tables[name]).tobytes())
  for variable_digest in sorted(
      hashlib.sha256(str(v.shape).encode() +
                     np.ascontiguousarray(v.numpy()).tobytes()).digest()
      for v in variables):
    digest.update(variable_digest)
  return digest.digest()[:bitstream.FINGERPRINT_BYTES]


@dataclasses.dataclass(frozen=True)
class CodecSpec:
  """The encoder side's identity and the shapes its files hold.

  Attributes:
    fingerprint: 8 bytes, the encoder side's identity (see the module).
    image_shape: (H, W, C) of the images coded.
    latent_shape: the spatial shape of one image's latent.
    stream_names: one name per string an image is coded to.
    dither_seed: the default seed of a dithered coder, else None.
  """
  fingerprint: bytes
  image_shape: tuple
  latent_shape: tuple
  stream_names: tuple
  dither_seed: int = None

  @classmethod
  def from_model(cls, model):
    """The spec of a model with a frozen coder: traces its `compress`."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    coder = model.coder
    image_shape = tuple(int(d) for d in model.config.image_shape)
    latent_shape = tuple(int(d) for d in model.latent_shape)
    compress = tf.function(model.compress).get_concrete_function(
        tf.TensorSpec([1, *image_shape], tf.float32))
    spec = {"image_shape": image_shape, "latent_shape": latent_shape,
            "stream_names": tuple(
                stream.name for stream in coder.stream_plan(latent_shape)),
            "dither_seed": model.dither_seed}
    description = {**spec, "coder": type(coder).__name__,
                   "levels": getattr(coder, "levels", None)}
    fingerprint = fingerprint_of(description, coder.tables(),
                                 compress.variables)
    return cls(fingerprint=fingerprint, **spec)

  @classmethod
  def from_manifest(cls, manifest):
    """The spec of a bundle, from its (checked) manifest."""
    streams = manifest["streams"]
    return cls(
        fingerprint=bytes.fromhex(manifest[FINGERPRINT_KEY]),
        image_shape=tuple(manifest["image_shape"]),
        latent_shape=tuple(manifest["latent_shape"]),
        stream_names=tuple(stream["name"] for stream in streams),
        dither_seed=next((stream["dither"]["seed"] for stream in streams
                          if "dither" in stream), None))

  def manifest_fields(self):
    """What a bundle's manifest holds of the spec (`from_manifest` reads it,
    with the seed and names from the manifest's streams)."""
    return {FINGERPRINT_KEY: self.fingerprint.hex(),
            "image_shape": list(self.image_shape),
            "latent_shape": list(self.latent_shape)}

  @property
  def num_streams(self):
    return len(self.stream_names)

  def pack(self, strings):
    """strings[stream][image] (bytes) -> the bytes of a file."""
    if len(strings) != self.num_streams:
      raise ValueError(f"{len(strings)} streams given, the coder writes "
                       f"{self.num_streams}")
    return bitstream.pack(bitstream.CodedImages(
        fingerprint=self.fingerprint, image_shape=self.image_shape,
        latent_shape=self.latent_shape, strings=[list(s) for s in strings],
        dither_seed=self.dither_seed))

  def unpack(self, data, max_images=None):
    """A file's bytes -> CodedImages, once it is checked whole and found to
    fit this spec (and to hold at most `max_images` images, None: any);
    BitstreamError with a one-line reason otherwise."""
    coded = bitstream.unpack(data, self.fingerprint, max_images)
    if coded.image_shape != self.image_shape:
      raise bitstream.BitstreamError(
          f"file holds {coded.image_shape} images, the model codes "
          f"{self.image_shape}")
    if coded.latent_shape != self.latent_shape:
      raise bitstream.BitstreamError(
          f"file holds latents of shape {coded.latent_shape}, the model "
          f"makes {self.latent_shape}")
    if len(coded.strings) != self.num_streams:
      raise bitstream.BitstreamError(
          f"file has {len(coded.strings)} streams per image, the model "
          f"{self.num_streams}")
    if (coded.dither_seed is None) != (self.dither_seed is None):
      raise bitstream.BitstreamError(
          "file and model disagree on dithered quantization (a dither seed "
          "in one, not in the other)")
    return coded

  @property
  def dithered(self):
    return self.dither_seed is not None

  def _counters(self, first_counter, count):
    """The counters of `count` messages from `first_counter` (None when the
    coder has no dither, which takes none)."""
    if not self.dithered:
      if first_counter is not None:
        raise ValueError("a message counter is for dithered coders only")
      return [None] * count
    first_counter = first_counter or 0
    if first_counter < 0 or first_counter + count - 1 > bitstream.MAX_COUNTER:
      raise ValueError(f"message counters must be in [0, "
                       f"{bitstream.MAX_COUNTER}]")
    return list(range(first_counter, first_counter + count))

  def pack_message(self, strings, counter=None):
    """One image's strings (one bytes per stream) -> a message's bytes.

    `counter` (dithered coders only, required there) is the dither index
    the image was coded with.
    """
    if len(strings) != self.num_streams:
      raise ValueError(f"{len(strings)} streams given, the coder writes "
                       f"{self.num_streams}")
    if self.dithered and counter is None:
      raise ValueError("a dithered coder's message needs its counter")
    (counter,) = self._counters(counter, 1)
    return bitstream.pack_message(self.fingerprint, list(strings), counter)

  def pack_messages(self, strings, first_counter=None):
    """strings[stream][image] -> one message per image; a dithered coder's
    image i was coded with dither index, and gets counter,
    `first_counter + i` (default 0)."""
    if len(strings) != self.num_streams:
      raise ValueError(f"{len(strings)} streams given, the coder writes "
                       f"{self.num_streams}")
    images = list(zip(*strings))
    counters = self._counters(first_counter, len(images))
    return [bitstream.pack_message(self.fingerprint, list(image), counter)
            for image, counter in zip(images, counters)]

  def unpack_message(self, data):
    """A message's bytes -> CodedImages of its one image, once it is found
    to be intact and for this spec; BitstreamError otherwise."""
    strings, counter = bitstream.unpack_message(data, self.fingerprint,
                                                self.num_streams)
    if (counter is None) == self.dithered:
      raise bitstream.BitstreamError(
          "message and model disagree on dithered quantization (a counter "
          "in one, a dither in the other)")
    return bitstream.CodedImages(
        fingerprint=self.fingerprint, image_shape=self.image_shape,
        latent_shape=self.latent_shape, strings=[[s] for s in strings],
        dither_seed=self.dither_seed, dither_index=counter or 0)

  def read(self, data, max_images=None):
    """A file's or a message's bytes (told apart by their first bytes) ->
    CodedImages; BitstreamError with a one-line reason, also for a file of
    more than `max_images` images (None: any number)."""
    if bitstream.is_file(data):
      return self.unpack(data, max_images)
    return self.unpack_message(data)

  def message_size(self, string_lengths, counter=None):
    """Bytes of the message of one image coded to strings of these lengths
    (a dithered coder's with this counter, default 0)."""
    if self.dithered and counter is None:
      counter = 0
    (counter,) = self._counters(counter, 1)
    return bitstream.message_size(list(string_lengths), counter)

  def file_size(self, string_lengths):
    """Bytes of a file holding one image coded to strings of these lengths:
    what a sender pays to send that image alone."""
    return bitstream.file_size(len(self.latent_shape), string_lengths,
                               dithered=self.dither_seed is not None)
