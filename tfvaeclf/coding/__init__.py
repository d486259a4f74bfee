"""The coding core: range coder, wire format, codec spec, typed streams and
the bundle's layout, shared by training, the board and the server.

numpy only (the C range coder through ctypes): nothing here imports
TensorFlow, so a board and a server load the same core that training
codes with, and can never disagree with it on a byte.

    range_coder     the numpy range coder, byte for byte TFC's
    native          the C range coder (csrc/), numpy as its fallback
    bitstream       the wire format of files and messages
    codec_spec      what a file must agree on with its reader
    dither          the shared dither of universal quantization
    int_layers      integer convolutions: one rounding rule (C: csrc/)
    slice_predictor a conditional coder's slice predictor in integers
    streams         the typed streams: the bundle manifest's schema
    latent_decoder  bounded decoding of strings, and the one slice loop
    bundle          the bundle's layout and the checks of its manifest
"""

from tfvaeclf.coding.range_coder import CdfTables
from tfvaeclf.coding.range_coder import decode_channel
from tfvaeclf.coding.range_coder import decode_index
from tfvaeclf.coding.range_coder import encode_channel
from tfvaeclf.coding.range_coder import encode_index
from tfvaeclf.coding.range_coder import quantize

__all__ = ["CdfTables", "decode_channel", "decode_index", "encode_channel",
           "encode_index", "quantize"]
