"""The conditional coders' slice loop on numpy arrays: board and server.

A hyperprior or channel-context latent is coded slice by slice: each
slice's location `loc` and scale index are predicted from the hyper
features and the slices decoded before it, so encoder and decoder must
feed the predictors the same quantized slices, `round(y - loc) + loc`.
This is `entropy.ChannelContextCoder._decode_slices` outside TensorFlow:
the board encodes with it (sub-models in TFLite) and the server decodes
with it (sub-models as SavedModel signatures). numpy only.
"""

import numpy as np

from tfvaeclf.edge import bundle, range_coder

__all__ = ["decode_slices", "encode_slices", "slice_inputs",
           "scale_indexes"]


def scale_indexes(index, num_scales):
  """The predicted (float) scale index -> the table index, as the Keras
  model rounds it: half to even, clipped to the table."""
  return np.clip(np.rint(index), 0, num_scales - 1).astype(np.int32)


def slice_inputs(features, decoded):
  """The named inputs of a slice's sub-model: the hyper features, and the
  slices decoded before it (none for the first)."""
  if not decoded:
    return {bundle.FEATURES: features}
  return {bundle.FEATURES: features,
          bundle.DECODED: np.concatenate(decoded, -1)}


def _slice_loop(features, slice_sizes, num_scales, predict, code_slice):
  """Runs `predict(k, features, decoded) -> (loc, index)` and
  `code_slice(k, loc, table indexes) -> int symbols` slice after slice;
  returns the quantized latent, float32."""
  decoded = []
  for k in range(len(slice_sizes)):
    loc, index = predict(k, features, decoded)
    symbols = code_slice(k, loc, scale_indexes(index, num_scales))
    decoded.append(symbols.astype(np.float32) + loc)
  return np.concatenate(decoded, -1)


def encode_slices(latent, features, slice_sizes, num_scales, predict):
  """float32 latents (N, H, W, C) -> (values, table indexes), int64 and
  int32 (N, H * W * C) in coding order: slice after slice, each in C
  order, as the Keras model's range encoder takes them."""
  slices = np.split(latent, np.cumsum(slice_sizes)[:-1], axis=-1)
  values, indexes = [], []

  def code_slice(k, loc, index):
    symbols = range_coder.quantize(slices[k], loc)
    values.append(symbols.reshape(len(latent), -1))
    indexes.append(index.reshape(len(latent), -1))
    return symbols

  _slice_loop(features, slice_sizes, num_scales, predict, code_slice)
  return np.concatenate(values, 1), np.concatenate(indexes, 1)


def decode_slices(streams, features, slice_sizes, num_scales, predict):
  """The latent decoded from `streams` (`latent_decoder.IndexedStreams`),
  float32 (N, H, W, C): `round(y - loc) + loc`, as the model's."""
  return _slice_loop(features, slice_sizes, num_scales, predict,
                     lambda k, loc, index: streams.decode(index))
