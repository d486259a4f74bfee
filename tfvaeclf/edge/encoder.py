"""Images -> range-coded strings on the board, without TensorFlow.

The TFLite encoder gives each image's latent as floats (dequantized here
when the int8 encoder gives integers); it is rounded half to even, as
TensorFlow's `round` does, and range-coded with the bundle's frozen tables,
byte for byte what TFC's ops write: by the C coder (`native`) where it
builds, else by the numpy one (`range_coder`); one log line says which. The
bundle's `CodecSpec` packs them into the same file, or one message per
image, that `python -m tfvaeclf.codec` reads.

A stream with a "dither" (a universally quantized latent, see
`tfvaeclf.dither`) sends the symbols `clip(round(y + u), 0, levels - 1)`
instead: image i of a file takes dither index i of the bundle's seed, a
message its counter, and the file (or the receiver's spec) carries that
seed so that the server subtracts the same `u`.
"""

import logging
import os

import numpy as np

from tfvaeclf import dither
from tfvaeclf.codec_spec import CodecSpec
from tfvaeclf.edge import bundle, native, range_coder
from tfvaeclf.edge.interpreter import load_interpreter

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
  lowest = int(np.iinfo(detail["dtype"]).min)
  table = (np.arange(lowest, lowest + 256).astype(np.float32)
           - zero_point) * scale
  return lambda values: table[values.astype(np.int64) - lowest]


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
    self._streams = bundle.read_tables(bundle_dir, manifest)
    model_file = bundle.ENCODER_INT8 if int8 else bundle.ENCODER
    self._interpreter, self.runtime = load_interpreter(
        os.path.join(bundle_dir, *model_file.split("/")), num_threads)
    # Tensors are found by the names in the signature, then used directly:
    # the signature runner reallocates on every call.
    runner = self._interpreter.get_signature_runner()
    image_input = runner.get_input_details()[bundle.ENCODER_INPUT]
    self._input_index = image_input["index"]
    self._pixels = _pixel_table(image_input)
    outputs = runner.get_output_details()
    self._outputs = {
        stream["name"]: (outputs[stream["name"]]["index"],
                         _dequantization(outputs[stream["name"]]),
                         _quantizer(stream))
        for stream in manifest["streams"]}
    self._batch_size = None
    self._stream_shapes = {stream["name"]: tuple(stream["shape"])
                           for stream in manifest["streams"]}
    # Which range coder runs: "C" or "numpy".
    self.coder = "C" if native_coder and native.available() else "numpy"
    self._encode_channel = (native.encode_channel if self.coder == "C"
                            else range_coder.encode_channel)
    _log.info("tfvaeclf.edge: range coding with the %s coder", self.coder)

  def latents(self, images, first_index=0):
    """uint8 images (N, H, W, C) -> {stream: int64 quantized values}.

    A dithered stream's image i takes dither index `first_index + i`.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise ValueError(f"images must be uint8 (N, {self.image_shape}), got "
                       f"{images.dtype} {images.shape}")
    if not len(images):  # TFLite can't allocate an empty batch
      return {name: np.zeros((0, *shape), np.int64)
              for name, shape in self._stream_shapes.items()}
    interpreter = self._interpreter
    if len(images) != self._batch_size:
      interpreter.resize_tensor_input(self._input_index, images.shape)
      interpreter.allocate_tensors()
      self._batch_size = len(images)
    interpreter.set_tensor(self._input_index, self._pixels[images])
    interpreter.invoke()
    return {name: quantize(dequantize(interpreter.get_tensor(index)),
                           first_index)
            for name, (index, dequantize, quantize) in self._outputs.items()}

  def code(self, latents):
    """{stream: values} -> per stream, one range-coded string per image."""
    return [self._encode_channel(latents[name], tables,
                                 coding_rank=coding_rank)
            for name, (tables, coding_rank) in self._streams.items()]

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
