"""Images -> range-coded strings on the board, without TensorFlow.

The TFLite encoder gives each image's latent as floats (dequantized here
when the int8 encoder gives integers); it is rounded half to even, as
TensorFlow's `round` does, and range-coded with the bundle's frozen tables,
byte for byte what TFC's ops write: by the C coder (`native`) where it
builds, every stream of the images in one call, else by the numpy one
(`range_coder`); one log line says which. The bundle's `CodecSpec` packs
them into the same file, or one message per image, that
`python -m tfvaeclf.codec` reads.

A stream with a "dither" (a universally quantized latent, see
`tfvaeclf.coding.dither`) sends the symbols `clip(round(y + u), 0, levels - 1)`
instead: image i of a file takes dither index i of the bundle's seed, a
message its counter, and the file (or the receiver's spec) carries that
seed so that the server subtracts the same `u`.

A conditional coder's bundle (hyperprior, channel context) codes the
hyper-latent like a factorized latent, then runs the bundle's float32 slice
coder on it and the latent, which quantizes the latent slice by slice and
picks each value's scale table as the Keras model does; the range coder
codes them in one string per image, as the Keras model writes it.
"""

import logging
import os

import numpy as np

from tfvaeclf.coding import dither
from tfvaeclf.coding.codec_spec import CodecSpec
from tfvaeclf.coding import bundle, native, range_coder
from tfvaeclf.edge.interpreter import SignatureModel

__all__ = ["EdgeEncoder"]

_log = logging.getLogger(__name__)


def _quantization(detail):
  params = detail["quantization_parameters"]
  return np.float32(params["scales"][0]), np.float32(params["zero_points"][0])


def _pixel_table(detail):
  """The encoder's input for each pixel value 0..255: a lookup table.

  Floats in [0, 1] for a float input; quantized with the input's scale
  and zero point for an integer one. Looking pixels up costs one `take`
  per image, where arithmetic on every pixel costs far more at batch 1.
  """
  pixels = np.arange(256, dtype=np.float32) / np.float32(255)
  if detail["dtype"] == np.float32:
    return pixels
  scale, zero_point = _quantization(detail)
  limits = np.iinfo(detail["dtype"])
  quantized = np.rint(pixels / scale + zero_point)
  return np.clip(quantized, limits.min, limits.max).astype(detail["dtype"])


def _dequantization(detail):
  """raw output -> float32 latent.

  An integer output is dequantized (`(q - zero_point) * scale`) through a
  table of its 256 possible values, so that rounding, and a dither, act on
  the value the float encoder would give.
  """
  if detail["dtype"] == np.float32:
    return lambda values: values
  scale, zero_point = _quantization(detail)
  # Indexed by the output's bytes, whatever its signedness: one `take`.
  codes = np.arange(256, dtype=np.uint8).view(detail["dtype"])
  table = (codes.astype(np.float32) - zero_point) * scale
  return lambda values: table[values.view(np.uint8)]


def _quantizer(stream):
  """(float32 latents (N, ...), first dither index) -> the int64 values the
  stream codes.

  Rounded half to even like TF's `round`; a dithered stream's in float32
  after adding the dither, as `entropy.DitheredCoder` computes its symbols.
  """
  if "dither" not in stream:
    return lambda latents, first_index: range_coder.quantize(latents)
  seed, levels = stream["dither"]["seed"], stream["dither"]["levels"]

  def quantize(latents, first_index):
    u = dither.np_dither(seed, len(latents), latents.shape[1:], first_index)
    return np.clip(range_coder.quantize(latents + u), 0, levels - 1)

  return quantize


class _ChannelStream:
  """A stream coded with a table per channel (factorized, dithered)."""

  def __init__(self, stream):
    self._quantize = _quantizer(stream)
    self._shape = tuple(stream["shape"])

  def quantize(self, latents, first_index, coded):
    del coded  # the stream depends on no other
    return self._quantize(latents, first_index)

  def empty(self):
    return np.zeros((0, *self._shape), np.int64)

  @staticmethod
  def coded(values):
    """-> (values, table indexes or None) for the range coder."""
    return values, None


class _IndexedStream:
  """A conditional coder's latent: the bundle's float32 slice coder runs
  the model's slice loop on the coded hyper-latent (for the int8 encoder
  too: the server predicts the tables in float32 from the same integers,
  so the board's tables are the decoder's)."""

  def __init__(self, bundle_dir, stream, num_threads):
    self._on = stream["conditional"]["on"]
    self._size = int(np.prod(stream["shape"]))
    self._model = SignatureModel(
        os.path.join(bundle_dir, *stream["conditional"]["model"].split("/")),
        num_threads)

  def quantize(self, latents, first_index, coded):
    """-> (values, table indexes), (N, values per image) in coding order."""
    del first_index  # no dither
    outputs = self._model.run({
        bundle.HYPER_INPUT: coded[self._on].astype(np.float32),
        bundle.LATENT_INPUT: latents})
    return outputs[bundle.VALUES], outputs[bundle.INDEXES]

  def empty(self):
    return (np.zeros((0, self._size), np.int32),) * 2

  @staticmethod
  def coded(values_and_indexes):
    return values_and_indexes


class EdgeEncoder:
  """A bundle's encoder and coding tables, checked against its manifest.

  Args:
    bundle_dir: a bundle from `python -m export` (only `manifest.json` and
      `edge/` are needed).
    int8: use the full-integer encoder instead of the float32 one.
    expected_fingerprint: 8 bytes; refuse a bundle of another model.
    num_threads: interpreter threads (None: the runtime's default).
    native_coder: range-code with the C coder where it builds (False: the
      numpy coder always; the bytes are the same).

  Raises:
    BundleError: the bundle is missing, altered or of another model.
  """

  def __init__(self, bundle_dir, int8=False, expected_fingerprint=None,
               num_threads=None, native_coder=True):
    manifest = bundle.read_manifest(bundle_dir, bundle.EDGE_DIR,
                                    expected_fingerprint)
    self.manifest = manifest
    # What the files of this bundle hold (its seed is the dither's).
    self.codec = CodecSpec.from_manifest(manifest)
    self.image_shape = self.codec.image_shape
    self.latent_shape = self.codec.latent_shape
    tables = bundle.read_tables(bundle_dir, manifest)
    model_file = bundle.ENCODER_INT8 if int8 else bundle.ENCODER
    self._encoder = SignatureModel(
        os.path.join(bundle_dir, *model_file.split("/")), num_threads)
    self.runtime = self._encoder.runtime
    self._pixels = _pixel_table(self._encoder.inputs[bundle.ENCODER_INPUT])
    self._dequantize = {name: _dequantization(detail)
                        for name, detail in self._encoder.outputs.items()}
    # Which range coder runs: "C" or "numpy".
    self.coder = "C" if native_coder and native.available() else "numpy"
    self._streams = {}
    for stream in manifest["streams"]:  # a hyper-latent before its latent
      self._streams[stream["name"]] = (
          _IndexedStream(bundle_dir, stream, num_threads)
          if "conditional" in stream else _ChannelStream(stream))
    # Every stream of an image in one call of the range coder; an indexed
    # stream's values and indexes are (N, values per image).
    self._coder = native.StreamsEncoder(
        [(tables[stream["name"]][0],
          1 if "conditional" in stream else tables[stream["name"]][1])
         for stream in manifest["streams"]],
        numpy_coder=self.coder == "numpy")
    _log.info("tfvaeclf.edge: range coding with the %s coder", self.coder)

  def latents(self, images, first_index=0):
    """uint8 images (N, H, W, C) -> {stream: what it codes}: int64
    quantized values, a conditional latent's with their table indexes.

    A dithered stream's image i takes dither index `first_index + i`.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise ValueError(f"images must be uint8 (N, {self.image_shape}), got "
                       f"{images.dtype} {images.shape}")
    if not len(images):  # TFLite can't allocate an empty batch
      return {name: stream.empty() for name, stream in self._streams.items()}
    outputs = self._encoder.run({bundle.ENCODER_INPUT: self._pixels[images]})
    coded = {}
    for name, stream in self._streams.items():
      coded[name] = stream.quantize(self._dequantize[name](outputs[name]),
                                    first_index, coded)
    return coded

  def code(self, latents):
    """`latents` -> per stream, one range-coded string per image."""
    return self._coder.encode(*zip(*(
        stream.coded(latents[name])
        for name, stream in self._streams.items())))

  def encode(self, images, first_index=0):
    """uint8 images -> strings[stream][image], as the model's `compress`
    (image i with dither index `first_index + i`)."""
    return self.code(self.latents(images, first_index))

  def encode_file(self, images):
    """uint8 images -> the bytes of a tfvaeclf file for the server."""
    return self.codec.pack(self.encode(images))

  def encode_messages(self, images, first_counter=None):
    """uint8 images -> one message's bytes per image, for the server.

    A dithered bundle's image i gets counter, and dither index,
    `first_counter + i` (default 0): the sender keeps the count, so that
    consecutive messages never share a dither.
    """
    first_index = first_counter or 0
    return self.codec.pack_messages(self.encode(images, first_index),
                                    first_counter)
