"""The model's encoder as TFLite flatbuffers: float32, and full-integer.

TFC's range-coding ops do not convert to TFLite, so the edge model stops at
the latent and the board range-codes it with `tfvaeclf.coding.range_coder`.
The signature is `serving_default(images) -> {stream name: latent}`: the
board finds each stream's output by name.

Outputs are the unrounded latents. The float32 encoder returns them as
float32; the full-integer one takes uint8 pixels (with the calibrated
input scale, 1/255 when the sample spans black to white) and returns int8,
so every op on the board is an integer op; the board dequantizes and
rounds in numpy, as `tf.round` does (half to even).

The encoders output what the coder's `edge_outputs` gives, one tensor per
stream (a conditional coder's hyper-latent `z` too); a model the board runs
after them (the coder's `board_functions`, a conditional coder's slice
coder) is converted by `convert_function`, in float32.
"""

import numpy as np
import tensorflow as tf

from tfvaeclf.coding import bundle

__all__ = ["convert", "convert_function", "describe", "edge_function"]


def convert(encode_streams, image_shape, calibration_images=None):
  """The .tflite bytes: float32, or full-integer if calibration is given.

  encode_streams: float images in [0, 1] -> {stream name: latent}.
  calibration_images: float32 (N, H, W, C) in [0, 1], a sample of the
  training data from which the int8 ranges of every tensor are measured.
  The batch axis is left free, so the board can code a batch in one call.
  """
  return convert_function(edge_function(encode_streams, image_shape),
                          calibration_images)


def edge_function(encode_streams, image_shape):
  """`encode_streams` as the `tf.function` that `convert` converts: float
  images of `image_shape`, any batch, named as the board feeds them."""
  return tf.function(encode_streams, input_signature=[tf.TensorSpec(
      [None, *image_shape], tf.float32, name=bundle.ENCODER_INPUT)])


def convert_function(function, calibration_images=None):
  """The .tflite bytes of a `tf.function` with an input signature (named
  as the board feeds it); full-integer with `calibration_images`, which
  the one input (images) then takes as uint8."""
  function = function.get_concrete_function()
  # The converter saves this holder, not the Keras model, whose saving is
  # slow and warns: it needs only the weights the encoder reads.
  weights = tf.Module()
  weights.encoder = list(function.variables)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function], weights)
  if calibration_images is not None:
    def representative_dataset():
      for image in calibration_images:
        yield [image[np.newaxis]]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.int8
  return converter.convert()


def _tensor(detail):
  scale, zero_point = detail["quantization"]
  described = {"dtype": np.dtype(detail["dtype"]).name,
               "shape": [int(d) for d in detail["shape_signature"]]}
  if scale:
    described["quantization"] = {"scale": float(scale),
                                 "zero_point": int(zero_point)}
  return described


def describe(flatbuffer):
  """Name, dtype, shape and quantization of each input and output."""
  runner = tf.lite.Interpreter(
      model_content=flatbuffer).get_signature_runner()
  return {
      "inputs": {name: _tensor(detail)
                 for name, detail in runner.get_input_details().items()},
      "outputs": {name: _tensor(detail)
                  for name, detail in runner.get_output_details().items()},
  }
