"""What a network costs on the board: sc2bench's edge-side size.

Split computing is judged by three numbers a point (sc2bench): the data the
board sends, the accuracy, and the size of what the board runs. The last is
counted here for any part of a model given as a function of float images:
its parameters, and the bytes of its TFLite flatbuffer in float32 and in
full-integer form (what a board stores), converted as the exporter does.
"""

from . import encoder

__all__ = ["edge_size"]


def edge_size(function, image_shape, parameters, calibration_images):
  """{"edge_parameters", "edge_float_bytes", "edge_int8_bytes"} of the
  edge part `function` (float images -> {name: tensor}) with `parameters`
  weights; `calibration_images` (float32 N, H, W, C) set its int8 ranges."""
  return {
      "edge_parameters": int(parameters),
      "edge_float_bytes": len(encoder.convert(function, image_shape)),
      "edge_int8_bytes": len(encoder.convert(function, image_shape,
                                             calibration_images)),
  }
