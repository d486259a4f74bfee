"""What a network costs on the board: the edge budget of a point.

Split computing is judged by three numbers a point (sc2bench): the data the
board sends, the accuracy, and the size of what the board runs. The last is
counted here for any part of a model given as a function of float images:
its parameters, the bytes of its TFLite flatbuffer in float32 and in
full-integer form (what a board stores), converted as the exporter does,
and the multiply-accumulates the int8 model runs for one image (`macs`).
"""

import numpy as np
import tensorflow as tf

from . import encoder

__all__ = ["edge_size", "flatbuffer_sizes", "macs", "parameters"]

# Ops whose multiply-accumulates are counted: each output value of a
# convolution sums kernel-height x kernel-width x input-channels products
# (one channel for a depthwise one), of a fully connected layer one product
# per input feature. Element-wise ops, pooling and quantization are not.
_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV",
            "FULLY_CONNECTED")


def macs(flatbuffer):
  """Multiply-accumulates of one run of a TFLite model (batch 1)."""
  interpreter = tf.lite.Interpreter(model_content=flatbuffer)
  shapes = {detail["index"]: detail["shape"]
            for detail in interpreter.get_tensor_details()}
  total = 0
  for op in interpreter._get_ops_details():  # pylint: disable=protected-access
    if op["op_name"] not in _MAC_OPS:
      continue
    output = shapes[op["outputs"][0]]
    if op["op_name"] == "TRANSPOSE_CONV":  # inputs: shape, kernel, image
      kernel, image = shapes[op["inputs"][1]], shapes[op["inputs"][2]]
      per_input = kernel[0] * kernel[1] * kernel[2]  # (out, kh, kw, in)
      total += int(np.prod(image[:-1])) * int(image[-1]) * int(per_input)
      continue
    kernel = shapes[op["inputs"][1]]
    if op["op_name"] == "CONV_2D":  # kernel (out, kh, kw, in)
      per_output = kernel[1] * kernel[2] * kernel[3]
    elif op["op_name"] == "DEPTHWISE_CONV_2D":  # kernel (1, kh, kw, out)
      per_output = kernel[1] * kernel[2]
    else:  # FULLY_CONNECTED: kernel (out, in)
      per_output = kernel[1]
    total += int(np.prod(output)) * int(per_output)
  return total


def edge_size(function, image_shape, parameters, calibration_images):
  """{"edge_parameters", "edge_float_bytes", "edge_int8_bytes",
  "edge_macs"} of the edge part `function` (float images -> {name:
  tensor}) with `parameters` weights; `calibration_images` (float32 N, H,
  W, C) set its int8 ranges."""
  return flatbuffer_sizes(
      encoder.convert(function, image_shape),
      encoder.convert(function, image_shape, calibration_images), parameters)


def flatbuffer_sizes(float32, int8, parameters):
  """`edge_size`'s figures of an edge part already converted: its float32
  and int8 flatbuffers, and its `parameters`."""
  return {
      "edge_parameters": int(parameters),
      "edge_float_bytes": len(float32),
      "edge_int8_bytes": len(int8),
      "edge_macs": macs(int8),
  }


def parameters(function):
  """The weights a `tf.function` with an input signature reads, counted as
  Keras counts a model's (batch norm's moving statistics too): what the
  board stores of it, whichever layers of a model it runs."""
  return sum(int(np.prod(v.shape))
             for v in function.get_concrete_function().variables)
