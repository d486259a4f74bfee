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
server share, each with its own predictor of the slices' tables. A
string that does not decode fails alone, the batch's others decoding as
they would without it (`decode_channels`, `IndexedStreams.failures`): a
server decodes a batch of payloads in one call, and tells each its own
outcome (`payload_error`). It imports without TensorFlow: the server bundle
and the Keras models use it alike.
"""

import numpy as np

from tfvaeclf.coding import dither, native, range_coder
from tfvaeclf.errors import BitstreamError

__all__ = ["IndexedStreams", "channel_tables", "decode_channels",
           "decode_dithered", "decode_factorized", "decode_slices",
           "payload_error", "raise_failures"]


def channel_tables(tables):
  """Parsed tables of a channel stream, from {"cdf", "cdf_offset"} (as
  saved in coder_tables.npz or a bundle); a `CdfTables` passes through.
  Parse once and reuse: parsing costs more than decoding a batch."""
  if isinstance(tables, range_coder.CdfTables):
    return tables
  return range_coder.CdfTables(np.asarray(tables["cdf"]),
                               np.asarray(tables["cdf_offset"]))


def payload_error(failures):
  """The BitstreamError (one line) of the first image of a payload whose
  strings do not decode, images counted from the payload's first; None if
  every one decodes.

  Args:
    failures: the payload's images' entries of a decode's failures: per
      image, None or (stream name, why its string does not decode).
  """
  for image, failure in enumerate(failures):
    if failure is not None:
      stream, reason = failure
      return BitstreamError(
          f"payload does not decode: the {stream} string of image {image} "
          f"is corrupt or truncated ({reason})")
  return None


def raise_failures(failures):
  """Raises `payload_error(failures)`, if any: a whole call is one
  payload."""
  error = payload_error(failures)
  if error is not None:
    raise error


def decode_channels(strings, tables, latent_shape, stream="latent"):
  """Strings of a channel-coded stream -> (float32 latents, failures), a
  string that does not decode failing alone: a batch of payloads decodes in
  one call whatever its bad ones.

  Args:
    strings: one bytes per image, as a checked file holds them (a list,
      or an object array as TF's `.numpy()` gives).
    tables: `channel_tables(...)` or its argument; one table per channel.
    latent_shape: the spatial shape of one image's latent (the file's).
    stream: its name, for the failures.

  Returns:
    float32 (len(strings), *latent_shape, channels), meaningless for an
    image that fails; per image, None or (stream, why it fails).
  """
  tables = channel_tables(tables)
  shape = (*np.asarray(latent_shape, np.int64).tolist(), tables.num_tables)
  decoder = IndexedStreams(strings, tables)
  # Value k of a string takes table k % num_tables, the channel.
  channel = np.arange(np.prod(shape, dtype=np.int64)) % tables.num_tables
  values = decoder.decode(np.broadcast_to(
      channel.reshape(shape), (len(strings), *shape)))
  return values.astype(np.float32), decoder.failures(stream)


def decode_factorized(strings, tables, latent_shape, stream="latent"):
  """`decode_channels` of one payload's strings: the latents, or
  BitstreamError (one line) if a string does not decode."""
  values, failures = decode_channels(strings, tables, latent_shape, stream)
  raise_failures(failures)
  return values


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
  image's decoder resumes where the slice before ended. A string that does
  not decode fails alone (`failures`), whatever the others.

  Args:
    strings: one bytes per image.
    tables: a `range_coder.CdfTables` of the indexed tables.
  """

  def __init__(self, strings, tables):
    self._decoder = native.IndexDecoder(strings, tables, isolate=True)

  def decode(self, indexes):
    """The next slice: int32 values shaped like `indexes` (images first),
    value i with table indexes[i]; an image's are meaningless from where its
    string fails."""
    return self._decoder.decode(indexes)

  def failures(self, stream="latent"):
    """After the last slice: per image, None or (stream, why its string
    does not decode)."""
    return [error and (stream, error) for error in self._decoder.errors()]


def decode_slices(streams, num_slices, num_scales, predict):
  """The slice loop: an indexed latent decoded slice after slice.

  Args:
    streams: the `IndexedStreams` of the latent's strings; ask it for its
      `failures` after.
    num_slices: how many slices the latent has.
    num_scales: how many tables the scale index picks from.
    predict: `predict(k, decoded) -> (loc, index)`, float32 arrays of slice
      `k`'s shape, from the slices decoded before it (a list).

  Returns:
    float32 (N, ..., channels): `symbols + loc`, slice after slice, as the
    encoder's `round(y - loc) + loc`.
  """
  decoded = []
  for k in range(num_slices):
    loc, index = predict(k, decoded)
    # The index as the model rounds it: half to even, within the table. A
    # NaN (from what a hostile string decodes to) picks table 0: that image
    # decodes to garbage, or fails, alone.
    index = np.clip(np.rint(np.nan_to_num(index)), 0,
                    num_scales - 1).astype(np.int32)
    symbols = streams.decode(index)
    decoded.append(symbols.astype(np.float32) + np.asarray(loc, np.float32))
  return np.concatenate(decoded, -1)
