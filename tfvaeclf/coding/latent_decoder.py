"""Range-decodes latents from bytes that came from outside, TF-free.

Every decode of a file, a message or a bundle's strings runs the project's
own decoder (`tfvaeclf.coding.native`: the C coder, or the numpy coder where
it cannot be built), never TFC's decode ops: its work is bounded by the
latent size and the string length whatever the bytes, where TFC's can run
for minutes on a crafted string. Values equal TFC's `decompress` bit for
bit on every string TFC's encoder writes.

This module decodes the streams coded with one table per channel (the
factorized coder, and the dithered coder's symbols), and the indexed
streams of the conditional coders slice by slice (`IndexedStreams`) in the
one slice loop (`decode_slices`) that the Keras model's `decode` and the
server share, each with its own predictor of the slices' tables. It
imports without TensorFlow: the server bundle and the Keras models use it
alike.
"""

import numpy as np

from tfvaeclf.coding import dither, native, range_coder
from tfvaeclf.errors import BitstreamError

__all__ = ["IndexedStreams", "channel_tables", "decode_dithered",
           "decode_factorized", "decode_slices"]


def channel_tables(tables):
  """Parsed tables of a channel stream, from {"cdf", "cdf_offset"} (as
  saved in coder_tables.npz or a bundle); a `CdfTables` passes through.
  Parse once and reuse: parsing costs more than decoding a batch."""
  if isinstance(tables, range_coder.CdfTables):
    return tables
  return range_coder.CdfTables(np.asarray(tables["cdf"]),
                               np.asarray(tables["cdf_offset"]))


def _undecodable(error):
  """The decoder's ValueError (an escape code no encoder writes, an int32
  overflow) as the user's error."""
  return BitstreamError(f"payload does not decode: {error}")


def _check_decoded(ok, stream="latent"):
  """Raises BitstreamError naming the first image whose string failed."""
  bad = np.flatnonzero(~np.asarray(ok, bool))
  if bad.size:
    raise BitstreamError(
        f"payload does not decode: the {stream} string of image "
        f"{int(bad[0])} is corrupt or truncated")


def decode_factorized(strings, tables, latent_shape, stream="latent"):
  """Strings of a channel-coded stream -> float32 latents.

  Args:
    strings: one bytes per image, as a checked file holds them (a list,
      or an object array as TF's `.numpy()` gives).
    tables: `channel_tables(...)` or its argument; one table per channel.
    latent_shape: the spatial shape of one image's latent (the file's).
    stream: its name, for the error message.

  Returns:
    float32 (len(strings), *latent_shape, channels).

  Raises:
    BitstreamError: a string does not decode (one line).
  """
  tables = channel_tables(tables)
  shape = (*np.asarray(latent_shape, np.int64).tolist(), tables.num_tables)
  try:
    values, ok = native.decode_channel(strings, tables, shape,
                                       check=False)
  except ValueError as e:
    raise _undecodable(e) from None
  _check_decoded(ok, stream)
  return values.astype(np.float32)


def decode_dithered(strings, tables, latent_shape, seed, dither_indices=None):
  """A dithered coder's strings -> `m - u`, float32 as the encoder's side.

  `m` are the decoded symbols, `u` the shared dither (`tfvaeclf.coding.dither`)
  of `seed` for images `dither_indices` (default: 0, 1, ... as in a file).
  """
  symbols = decode_factorized(strings, tables, latent_shape)
  if dither_indices is None:
    dither_indices = len(symbols)
  return symbols - dither.np_dither(seed, dither_indices, symbols.shape[1:])


class IndexedStreams:
  """A conditional latent's strings, one per image, decoded a slice at a
  time: each slice's tables depend on the slices decoded before, and each
  image's decoder resumes where the slice before ended.

  Args:
    strings: one bytes per image.
    tables: a `range_coder.CdfTables` of the indexed tables.
  """

  def __init__(self, strings, tables):
    self._decoder = native.IndexDecoder(strings, tables)

  def decode(self, indexes):
    """The next slice: int32 values shaped like `indexes` (images first),
    value i with table indexes[i]; BitstreamError if they do not decode."""
    try:
      return self._decoder.decode(indexes)
    except ValueError as e:
      raise _undecodable(e) from None

  def finish(self, stream="latent"):
    """After the last slice: BitstreamError unless every string ends as an
    encoder ends one."""
    _check_decoded(self._decoder.finish(), stream)


def decode_slices(streams, num_slices, num_scales, predict, name="latent"):
  """The slice loop: an indexed latent decoded slice after slice.

  Args:
    streams: the `IndexedStreams` of the latent's strings.
    num_slices: how many slices the latent has.
    num_scales: how many tables the scale index picks from.
    predict: `predict(k, decoded) -> (loc, index)`, float32 arrays of slice
      `k`'s shape, from the slices decoded before it (a list).
    name: the stream's name, for the error message.

  Returns:
    float32 (N, ..., channels): `symbols + loc`, slice after slice, as the
    encoder's `round(y - loc) + loc`.

  Raises:
    BitstreamError: a string does not decode (one line).
  """
  decoded = []
  for k in range(num_slices):
    loc, index = predict(k, decoded)
    # The index as the model rounds it: half to even, within the table.
    index = np.clip(np.rint(index), 0, num_scales - 1).astype(np.int32)
    symbols = streams.decode(index)
    decoded.append(symbols.astype(np.float32) + np.asarray(loc, np.float32))
  streams.finish(name)
  return np.concatenate(decoded, -1)
