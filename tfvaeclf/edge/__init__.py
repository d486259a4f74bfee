"""Edge runtime: what a board needs to code a latent, without TensorFlow.

Only numpy is imported here (and by every module of this package).
"""

from tfvaeclf.edge.range_coder import CdfTables
from tfvaeclf.edge.range_coder import decode_channel
from tfvaeclf.edge.range_coder import decode_index
from tfvaeclf.edge.range_coder import encode_channel
from tfvaeclf.edge.range_coder import encode_index
from tfvaeclf.edge.range_coder import quantize

__all__ = ["CdfTables", "decode_channel", "decode_index", "encode_channel",
           "encode_index", "quantize"]
