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

A conditional coder's encoders output its hyper-latent `z` too (stream
"hyper"), and its slice loop is a third model (`slice_coder_function`:
z_hat, y -> the values and scale indexes the range coder takes), in
float32 only: the scale index picks the range coder's table, so the
board's must be the server's, which predicts it in float32 from the
decoded slices (`parameter_functions`); an int8 predictor's indexes would
differ from it now and then, and the decoder would lose its way.
"""

import numpy as np
import tensorflow as tf

from tfvaeclf.coding import bundle

__all__ = ["convert", "convert_function", "describe",
           "parameter_functions", "slice_coder_function"]


def convert(encode_streams, image_shape, calibration_images=None):
  """The .tflite bytes: float32, or full-integer if calibration is given.

  encode_streams: float images in [0, 1] -> {stream name: latent}.
  calibration_images: float32 (N, H, W, C) in [0, 1], a sample of the
  training data from which the int8 ranges of every tensor are measured.
  The batch axis is left free, so the board can code a batch in one call.
  """
  function = tf.function(encode_streams, input_signature=[tf.TensorSpec(
      [None, *image_shape], tf.float32, name=bundle.ENCODER_INPUT)])
  return convert_function(function, calibration_images)


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


def _specs(coder, latent_shape):
  """`spec(name, channels, shape=latent's)`: a float32 input of any batch,
  and the hyper-latent's spatial shape and channels."""
  latent_shape = [int(d) for d in latent_shape]
  z_shape = coder.hyper_analysis(
      tf.zeros([1, *latent_shape, coder.channels])).shape[1:]

  def spec(name, channels, shape=latent_shape):
    return tf.TensorSpec([None, *shape, channels], tf.float32, name=name)

  return spec, spec(bundle.HYPER_INPUT, z_shape[-1], z_shape[:-1])


def slice_coder_function(coder, latent_shape):
  """The board's half of a conditional coder: `slice_coder(z_hat, latent)
  -> {values, indexes}`, what the Keras model's `compress` range-codes."""
  spec, z_spec = _specs(coder, latent_shape)

  @tf.function(input_signature=[z_spec, spec(bundle.LATENT_INPUT,
                                             coder.channels)])
  def slice_coder(z_hat, latent):
    values, indexes = coder.slice_symbols(latent, z_hat)
    return {bundle.VALUES: values, bundle.INDEXES: indexes}

  return slice_coder


def parameter_functions(coder, latent_shape):
  """The decoder's half, as `tf.function`s with named inputs and outputs
  (`bundle.HYPER_SYNTHESIS`: z_hat -> features; `bundle.slice_model(k)`:
  features and the slices decoded before -> loc, index), which the server
  saves as signatures."""
  spec, z_spec = _specs(coder, latent_shape)
  latent_shape = [int(d) for d in latent_shape]

  @tf.function(input_signature=[z_spec])
  def hyper_synthesis(z_hat):
    return {bundle.FEATURES: coder.hyper_features(z_hat, latent_shape)}

  def outputs(k, features, decoded):
    loc, index = coder.slice_parameters(k, features, decoded)
    return {bundle.LOC: loc, bundle.INDEX: index}

  def slice_function(k):
    features_spec = spec(bundle.FEATURES, coder.channels)
    if not k:
      return tf.function(lambda features: outputs(k, features, []),
                         input_signature=[features_spec])
    decoded_spec = spec(bundle.DECODED, sum(coder.slice_sizes[:k]))
    return tf.function(
        lambda features, decoded: outputs(k, features, [decoded]),
        input_signature=[features_spec, decoded_spec])

  return {bundle.HYPER_SYNTHESIS: hyper_synthesis,
          **{bundle.slice_model(k): slice_function(k)
             for k in range(len(coder.slice_sizes))}}


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
