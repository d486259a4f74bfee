"""Images -> range-coded strings on the board, without TensorFlow.

The TFLite encoder gives each image's latent as floats (dequantized here
when the int8 encoder gives integers); it is rounded half to even, as
TensorFlow's `round` does, and range-coded with the bundle's frozen tables,
byte for byte what TFC's ops write: each stream by its type's board half
(`tfvaeclf.coding.streams`), by the C coder (`native`) where it
builds, every stream of the images in one call, else by the numpy one
(`range_coder`); one log line says which. The bundle's `CodecSpec` packs
them into the same file, or one message per image, that
`python -m tfvaeclf.codec` reads.

A stream with a "dither" (a universally quantized latent, see
`tfvaeclf.coding.dither`) sends the symbols `clip(round(y + u), 0, levels - 1)`
instead: image i of a file takes dither index i of the bundle's seed, a
message its counter, and the file (or the receiver's spec) carries that
seed so that the server subtracts the same `u`.

An indexed stream (the latent of the hyperprior and channel-context
coders) runs the bundle's float32 slice coder on the coded stream it is
conditional on and its latent, which quantizes the latent slice by slice
and picks each value's scale table as the Keras model does; the range coder
codes them in one string per image, as the Keras model writes it.
"""

import logging
import os

import numpy as np

from tfvaeclf.coding import bundle, native, streams
from tfvaeclf.coding.codec_spec import CodecSpec
from tfvaeclf.edge.interpreter import SignatureModel

__all__ = ["EdgeEncoder", "pixel_table"]

_log = logging.getLogger(__name__)


def _quantization(detail):
  params = detail["quantization_parameters"]
  return np.float32(params["scales"][0]), np.float32(params["zero_points"][0])


def pixel_table(detail):
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
    model_file = bundle.ENCODER_INT8 if int8 else bundle.ENCODER
    self._encoder = SignatureModel(
        os.path.join(bundle_dir, *model_file.split("/")), num_threads)
    self.runtime = self._encoder.runtime
    self._pixels = pixel_table(self._encoder.inputs[bundle.ENCODER_INPUT])
    self._dequantize = {name: _dequantization(detail)
                        for name, detail in self._encoder.outputs.items()}
    # Which range coder runs: "C" or "numpy".
    self.coder = "C" if native_coder and native.available() else "numpy"
    # Per stream of the plan (a stream before those it conditions), its
    # type's board half, and the model the board runs for it, if any.
    self._plan = streams.read_plan(bundle_dir, manifest)
    self._models = {
        stream.name: SignatureModel(
            os.path.join(bundle_dir, *stream.board_model.split("/")),
            num_threads)
        for stream in self._plan if stream.board_model}
    # Every stream of an image in one call of the range coder; an indexed
    # stream's values and indexes are (N, values per image).
    self._coder = native.StreamsEncoder(
        [stream.coder_tables() for stream in self._plan],
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
      return {stream.name: stream.empty() for stream in self._plan}
    return self.quantize(
        self._encoder.run({bundle.ENCODER_INPUT: self._pixels[images]}),
        first_index)

  def quantize(self, outputs, first_index=0):
    """The encoder's raw outputs {stream: array} -> {stream: what it
    codes}, each stream by its type's board half, in plan order (a stream
    before those conditional on it)."""
    coded = {}
    for stream in self._plan:
      coded[stream.name] = stream.quantize(
          self._dequantize[stream.name](outputs[stream.name]), first_index,
          coded, self._models.get(stream.name))
    return coded

  def code(self, latents):
    """`latents` -> per stream, one range-coded string per image."""
    return self._coder.encode(*zip(*(
        stream.coded(latents[stream.name]) for stream in self._plan)))

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
