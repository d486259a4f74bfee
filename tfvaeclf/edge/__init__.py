"""Edge runtime: what a board needs to code images, without TensorFlow.

Only numpy is imported here (and by every module of this package, with
Pillow for the command line), plus a TFLite runtime when an encoder is
loaded: TensorFlow's own only where no runtime is installed (`interpreter`).
"""

from tfvaeclf.edge.bundle import BundleError
from tfvaeclf.edge.encoder import EdgeEncoder
from tfvaeclf.edge.range_coder import CdfTables
from tfvaeclf.edge.range_coder import decode_channel
from tfvaeclf.edge.range_coder import decode_index
from tfvaeclf.edge.range_coder import encode_channel
from tfvaeclf.edge.range_coder import encode_index
from tfvaeclf.edge.range_coder import quantize

__all__ = ["BundleError", "CdfTables", "EdgeEncoder", "decode_channel",
           "decode_index", "encode_channel", "encode_index", "quantize"]
