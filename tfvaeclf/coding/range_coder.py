"""TensorFlow-free range coder, byte-compatible with tensorflow-compression.

The edge device has numpy but no TensorFlow, and TFC's range-coding ops are
custom TF ops that TFLite cannot run. This module reimplements, in numpy and
plain Python, the coder behind these TFC 2.14.1 ops:

  create_range_encoder + entropy_encode_channel / entropy_encode_index
      + entropy_encode_finalize                  -> `encode_channel`,
                                                    `encode_index`
  create_range_decoder + entropy_decode_channel / entropy_decode_index
      + entropy_decode_finalize                  -> `decode_channel`,
                                                    `decode_index`
  entropy_decode_index again and again on one
      handle (a latent slice by slice)           -> `IndexDecoder`

so strings made on the board decode with TFC on the server and vice versa.

Table format (the `cdf` of a TFC entropy model, see `CdfTables`): a flat int32
array of sections `[+-precision, 0, c_1, ..., 2**precision]`. A negative
precision turns on overflow ("escape") coding: the last bin of the section is
an escape code, and a value below 0 or at/above that bin is coded as the
escape bin, then `g` (>= 1) in Elias-gamma form as 1-bit uniform decisions:
bit_length(g) - 1 zeros, the bits of g from the most significant down, then
a sign bit. For negative values g = -value (sign 1); for value >= escape bin
index e, g = value - e + 1 (sign 0).

The arithmetic is TFC's 32-bit range coder: interval [base, base + size),
refined by `size * cdf >> precision`, renormalized 16 bits at a time when
size drops to 2**16 or below, with carries resolved into the bytes already
written, and a short termination that leaves implicit trailing zeros.

Conventions of this module
--------------------------
* `values` are the integers *before* `cdf_offset` is subtracted, i.e. what
  TFC's `compress` has after `round(bottleneck - quantization_offset)` (or
  `round(bottleneck)` in the indexed model). The offset subtraction happens
  here, per table, exactly as TFC does it. To mirror the raw op level
  (`gen_ops.entropy_encode_channel(handle, symbols)` with already offset
  symbols), use tables without offsets (`CdfTables(cdf)`), whose offsets
  are zero.
* Channel coding follows the kernel, not just its docstring: within one
  stream, the k-th value (flattened, C order) uses table `k % num_tables`.
  With `num_tables` equal to the innermost axis this is "table = channel".
* One stream (bytes) per batch element; the innermost `coding_rank` axes of
  `values` form one stream, like TFC's entropy models.

Where TFC misbehaves this module raises `ValueError` instead of copying it:
encoding a zero-probability symbol (TFC writes an undecodable stream), an
escape with g >= 2**30 (TFC's encoder loops forever; |values| up to about
2**30 are fine), more than 30 leading zeros in a decoded escape (TFC's
decoder overflows a shift), and int32 overflow.

Its decoder's work is bounded as the server needs (`ESCAPE_STEPS_PER_BYTE`):
one table step per value, which the shape bounds, plus escape steps (each
1-bit decision, and `_ESCAPE_STEPS` for the escape itself) bounded by the
string's length. A string whose escapes need more (one of escapes almost
alone, with tables whose escape bin costs next to no bit) is refused; the
C coder, within the bound on any string, decodes it.
"""

import bisect
import math
import struct

import numpy as np

__all__ = [
    "CdfTables",
    "ESCAPE_STEPS_PER_BYTE",
    "IndexDecoder",
    "PRECISION_MAX",
    "PRECISION_MIN",
    "decode_channel",
    "decode_index",
    "encode_channel",
    "encode_index",
    "quantize",
]

PRECISION_MIN = 1
PRECISION_MAX = 16

# All intervals are rescaled to this precision. `(size * (c << s)) >> (P)`
# equals `(size * c) >> (P - s)` exactly, so this changes no output bit and
# lets the inner loop use a constant shift, also for the 1-bit escape codes.
_P = PRECISION_MAX
_ONE = 1 << _P
_HALF = 1 << (_P - 1)
_M32 = 0xFFFFFFFF
_MAX_GAMMA = (1 << 30) - 1   # TFC's encoder hangs from 2**30 on.
_MAX_ZEROS = 30              # TFC's decoder overflows `1 << n` beyond this.
_I32_MIN, _I32_MAX = -(1 << 31), (1 << 31) - 1
# Escape steps the decoder takes per byte of a string, beyond a fixed
# allowance of two maximal escapes. Each 1-bit decision is a step (about
# 0.17 us in CPython), and an escaped value's table step costs about
# `_ESCAPE_STEPS` more: escapes add at most about 1.4 us a byte, within the
# server's bound of 2 us (`SECONDS_PER_BYTE` of tests/support/hostile.py).
# A valid string takes at most about 8 decisions a byte (each consumes a
# bit), so only one of escapes almost alone exceeds it.
ESCAPE_STEPS_PER_BYTE = 8
_ESCAPE_STEPS = 3
_ESCAPE_ALLOWANCE = 2 * (2 * _MAX_ZEROS + 2 + _ESCAPE_STEPS)

# Batches at least this large are coded with all streams advancing together
# in numpy; smaller ones stream by stream in plain Python (see the benchmark
# in tools/bench_range_coder.py).
LOCKSTEP_MIN_BATCH = 64


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
class CdfTables:
  """Range-coding tables parsed from TFC's `cdf` lookup (+ `cdf_offset`).

  Parsing mirrors the TFC kernel exactly: each section is `[p, 0, ...,
  2**|p|]`, `|p|` in [1, 16], non-decreasing, and ends at the *first* value
  equal to `2**|p|`; further copies of that value are padding and skipped.
  A 2-D `cdf` holds one section per row (then each row must end in padding
  only). Malformed tables raise `ValueError`.

  Attributes:
    num_tables: number of sections.
    precision: int array, |p| per table.
    overflow: bool array, whether the table codes escapes (p < 0).
    num_symbols: int array, bins per table (escape bin included).
    cdfs: list of int64 arrays, each `[0, ..., 2**precision]`.
    offsets: int64 array, `cdf_offset` per table (zeros if not given).
    flat: the int32 lookup array as given (for TFC, or for saving).
  """

  def __init__(self, cdf, cdf_offset=None):
    lookup = np.asarray(cdf)
    if lookup.dtype.kind not in "iu":
      raise ValueError(f"cdf must be an integer array, got {lookup.dtype}.")
    if lookup.ndim == 1:
      sections = _scan_lookup(lookup.astype(np.int64).tolist(), row=None)
    elif lookup.ndim == 2:
      sections = []
      for r, row in enumerate(lookup.astype(np.int64).tolist()):
        sections += _scan_lookup(row, row=r)
    else:
      raise ValueError(f"cdf must be 1-D or 2-D, got shape {lookup.shape}.")
    self.flat = lookup.astype(np.int32)
    self._build(sections, cdf_offset)

  @classmethod
  def from_cdfs(cls, cdfs, precision, offsets=None, overflow=True):
    """Builds tables from explicit CDFs.

    Args:
      cdfs: sequence of integer sequences `[0, ..., 2**precision]` (like the
        output of `pmf_to_quantized_cdf`).
      precision: int, or one int per table.
      offsets: optional `cdf_offset` per table.
      overflow: bool, or one bool per table: enable escape coding (TFC's
        entropy models always do).
    """
    cdfs = [np.asarray(c, dtype=np.int64).ravel() for c in cdfs]
    n = len(cdfs)
    precision = np.broadcast_to(np.asarray(precision, np.int64), (n,))
    overflow = np.broadcast_to(np.asarray(overflow, bool), (n,))
    parts = []
    for c, p, o in zip(cdfs, precision, overflow):
      parts.append(np.concatenate([[-p if o else p], c]))
    flat = np.concatenate(parts) if parts else np.zeros([0], np.int64)
    if np.any(flat < _I32_MIN) or np.any(flat > _I32_MAX):
      raise ValueError("CDF values must fit in int32.")
    return cls(flat.astype(np.int32), offsets)

  def with_offsets(self, cdf_offset):
    """A copy of these tables with other offsets."""
    new = object.__new__(CdfTables)
    new.__dict__.update(self.__dict__)
    new.offsets = _check_offsets(cdf_offset, self.num_tables)
    new._channel_cache = {}
    return new

  def _build(self, sections, cdf_offset):
    t = len(sections)
    if t == 0:
      raise ValueError("cdf holds no table.")
    self.num_tables = t
    self.precision = np.array([abs(s[0]) for s in sections], np.int64)
    self.overflow = np.array([s[0] < 0 for s in sections], bool)
    self.cdfs = [np.array(s[1:], np.int64) for s in sections]
    self.num_symbols = np.array([len(c) - 1 for c in self.cdfs], np.int64)
    self.offsets = _check_offsets(cdf_offset, t)

    # Interval bounds rescaled to 2**16, one padded row per table.
    width = int(self.num_symbols.max())
    self._width = width
    lo = np.zeros((t, width), np.int64)
    hi = np.zeros((t, width), np.int64)
    dec = []
    for i, c in enumerate(self.cdfs):
      scaled = c << (_P - int(self.precision[i]))
      k = len(c) - 1
      lo[i, :k] = scaled[:-1]
      hi[i, :k] = scaled[1:]
      dec.append(scaled.tolist())
    self._lo_flat = lo.ravel()
    self._hi_flat = hi.ravel()
    self._has_zero_bins = any(bool((np.diff(c) == 0).any())
                              for c in self.cdfs)
    # Escape bin per table (-1 without overflow coding), and the number of
    # symbols coded directly: [0, limit) needs no escape.
    self._escape = np.where(self.overflow, self.num_symbols - 1, -1)
    self._limit = np.where(self.overflow, self.num_symbols - 1,
                           self.num_symbols).astype(np.uint64)
    self._dec_cdfs = dec
    self._dec_escape = self._escape.tolist()
    self._channel_cache = {}

  def _layout(self, tidx):
    """Per-position arrays for table indices `tidx` (any shape)."""
    return _Layout(tidx, tidx * self._width, self.offsets[tidx],
                   self._limit[tidx], self._escape[tidx])

  def _channel_layout(self, n):
    """`_layout` of a length-n stream coded channel by channel (cached)."""
    hit = self._channel_cache.get(n)
    if hit is None:
      hit = self._layout(np.arange(n, dtype=np.int64) % self.num_tables)
      if len(self._channel_cache) < 8:
        self._channel_cache[n] = hit
    return hit

  def __repr__(self):
    precs = sorted(set(self.precision.tolist()))
    return (f"CdfTables(num_tables={self.num_tables}, precision={precs}, "
            f"overflow={bool(self.overflow.all())}, "
            f"max_symbols={int(self.num_symbols.max())})")


def _check_offsets(cdf_offset, num_tables):
  if cdf_offset is None:
    return np.zeros([num_tables], np.int64)
  off = np.asarray(cdf_offset)
  if off.dtype.kind not in "iu":
    raise ValueError(f"cdf_offset must be integers, got {off.dtype}.")
  off = off.astype(np.int64).ravel()
  if off.shape != (num_tables,):
    raise ValueError(
        f"cdf_offset has {off.size} entries but cdf holds {num_tables} "
        "tables.")
  return off


def _scan_lookup(values, row):
  """Splits one lookup (list of ints) into sections; mirrors TFC's scan."""
  where = "" if row is None else f" (row {row})"
  sections = []
  end = len(values)
  i = 0
  while i < end:
    start = i
    if end < i + 3:
      raise ValueError(
          f"CDF table ended prematurely at position {i}{where}: a table "
          "needs at least [precision, 0, 2**precision].")
    p = values[i]
    if not PRECISION_MIN <= abs(p) <= PRECISION_MAX:
      raise ValueError(
          f"Table at position {i}{where} has precision {p}; |precision| must "
          f"be in [{PRECISION_MIN}, {PRECISION_MAX}].")
    last = 1 << abs(p)
    i += 1
    if values[i] != 0:
      raise ValueError(
          f"CDF of the table at position {start}{where} must start with 0, "
          f"got {values[i]}.")
    while True:
      i += 1
      if i == end:
        raise ValueError(
            f"CDF of the table at position {start}{where} does not reach "
            f"1 << precision = {last}.")
      if values[i] < values[i - 1]:
        raise ValueError(
            f"CDF of the table at position {start}{where} decreases at "
            f"position {i} ({values[i - 1]} -> {values[i]}).")
      if values[i] == last:
        break
    i += 1
    sections.append(values[start:i])
    while i < end and values[i] == last:
      i += 1
    if row is not None and i != end:
      raise ValueError(
          f"Row {row} of the cdf matrix holds more than one table.")
  return sections


def _as_tables(cdf, cdf_offset):
  if isinstance(cdf, CdfTables):
    return cdf if cdf_offset is None else cdf.with_offsets(cdf_offset)
  return CdfTables(cdf, cdf_offset)


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def quantize(bottleneck, quantization_offset=None):
  """`round(bottleneck - offset)` as TFC's `compress` computes it (float32,
  round half to even), as int64: the `values` the encoders take."""
  x = np.asarray(bottleneck, np.float32)
  if quantization_offset is not None:
    x = x - np.asarray(quantization_offset, np.float32)
  return np.rint(x).astype(np.int64)


def _int_values(values, name="values"):
  v = np.asarray(values)
  if v.dtype.kind not in "iu":
    raise TypeError(
        f"{name} must be an integer array, got {v.dtype} (quantize floats "
        "first, e.g. with quantize()).")
  if v.dtype == np.uint64 and v.size and v.max() > np.iinfo(np.int64).max:
    raise ValueError(f"{name} out of range.")
  return v.astype(np.int64, copy=False)


def _split_batch(shape, coding_rank):
  coding_rank = int(coding_rank)
  if coding_rank < 0 or coding_rank > len(shape):
    raise ValueError(
        f"coding_rank={coding_rank} is invalid for values of rank "
        f"{len(shape)}.")
  cut = len(shape) - coding_rank
  return math.prod(shape[:cut]), math.prod(shape[cut:])


class _Layout(tuple):
  """Per-position coding data: table, row start, offset, limit, escape."""
  __slots__ = ()

  def __new__(cls, tidx, rows, offsets, limit, escape):
    return super().__new__(cls, (tidx, rows, offsets, limit, escape))


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------
def encode_channel(values, cdf, cdf_offset=None, *, coding_rank=1):
  """Range-codes `values`, one table per channel, like TFC's batched model.

  Equivalent to TFC's `ContinuousBatchedEntropyModel.compress` after its
  quantization step, i.e. `symbols = values - cdf_offset` followed by
  `create_range_encoder` / `entropy_encode_channel` /
  `entropy_encode_finalize`.

  Args:
    values: integer array `(*batch, *coding_shape)`; the innermost
      `coding_rank` axes of each batch element form one stream, in which the
      k-th value (C order) is coded with table `k % num_tables`.
    cdf: a `CdfTables` (build it once: parsing costs more than coding), or
      TFC's `cdf` lookup array.
    cdf_offset: per-table offsets subtracted from `values`; defaults to the
      offsets held by `cdf` (zero if it has none).
    coding_rank: number of innermost axes per stream.

  Returns:
    list of bytes, one per batch element (batch axes flattened, C order).
  """
  tables = _as_tables(cdf, cdf_offset)
  v = _int_values(values)
  batch, n = _split_batch(v.shape, coding_rank)
  layout = tables._channel_layout(n)
  sym = v.reshape(batch, n) - layout[2]
  return _encode_symbols(tables, sym, layout)


def encode_index(values, indexes, cdf, cdf_offset=None, *, coding_rank=1):
  """Range-codes `values`, each with the table chosen by `indexes`.

  Equivalent to TFC's `ContinuousIndexedEntropyModel.compress` after
  quantization (`symbols = values - cdf_offset[indexes]`, then
  `entropy_encode_index`).

  Args:
    values: integer array `(*batch, *coding_shape)`.
    indexes: integer array of the same shape, table index per value.
    cdf: a `CdfTables`, or TFC's `cdf` lookup array.
    cdf_offset: per-table offsets (see `encode_channel`).
    coding_rank: number of innermost axes per stream.

  Returns:
    list of bytes, one per batch element.
  """
  tables = _as_tables(cdf, cdf_offset)
  v = _int_values(values)
  idx = _int_values(indexes, "indexes")
  if idx.shape != v.shape:
    raise ValueError(
        f"indexes shape {idx.shape} must equal values shape {v.shape}.")
  batch, n = _split_batch(v.shape, coding_rank)
  idx = idx.reshape(batch, n)
  _check_indexes(idx, tables.num_tables)
  layout = tables._layout(idx)
  sym = v.reshape(batch, n) - layout[2]
  return _encode_symbols(tables, sym, layout)


def _stream_indexes(indexes, num_strings, num_tables):
  """Checked `indexes` (num_strings, ...), and as (num_strings, n)."""
  idx = _int_values(indexes, "indexes")
  if idx.ndim == 0 or idx.shape[0] != num_strings:
    raise ValueError(
        f"indexes shape {idx.shape} must start with the number of strings "
        f"({num_strings}).")
  flat = idx.reshape(num_strings, -1)
  _check_indexes(flat, num_tables)
  return idx, flat


def _check_indexes(idx, num_tables):
  if idx.size and (idx.min() < 0 or idx.max() >= num_tables):
    bad = idx[(idx < 0) | (idx >= num_tables)].ravel()[0]
    raise ValueError(f"index={bad} not in range [0, {num_tables}).")


def _encode_symbols(tables, sym, layout):
  """Codes (batch, n) table-relative symbols; layout broadcasts to them."""
  batch = sym.shape[0]
  if batch == 0:
    return []
  tidx, rows, _, limit, escape = layout
  # One unsigned compare finds every symbol that is not coded directly
  # (negative ones wrap to huge values).
  direct = sym.view(np.uint64) < limit
  all_direct = bool(direct.all())
  if all_direct:
    flat = rows + sym
  else:
    tidx = np.broadcast_to(tidx, sym.shape)
    escape = np.broadcast_to(escape, sym.shape)
    bad = ~direct & (escape < 0)
    if bad.any():
      b, j = np.argwhere(bad)[0]
      raise ValueError(
          f"value={int(sym[b, j])} (after cdf_offset) not in range "
          f"[0, {int(tables.num_symbols[tidx[b, j]])}) for table "
          f"{int(tidx[b, j])}, which has no overflow coding.")
    escaped = ~direct
    flat = rows + np.where(escaped, escape, sym)
  lo = tables._lo_flat.take(flat)
  hi = tables._hi_flat.take(flat)
  if tables._has_zero_bins and not (hi > lo).all():
    b, j = np.argwhere(hi <= lo)[0]
    t = int(np.broadcast_to(tidx, sym.shape)[b, j])
    raise ValueError(
        f"value={int(sym[b, j])} (after cdf_offset) has zero probability in "
        f"table {t}; TFC would write an undecodable stream.")
  if all_direct:
    if batch >= LOCKSTEP_MIN_BATCH:
      return _code_lockstep(lo, hi, None)
    return [_code_stream(l, h) for l, h in zip(lo.tolist(), hi.tolist())]
  gammas = _escape_gammas(sym, escape, escaped)
  if batch >= LOCKSTEP_MIN_BATCH:
    return _code_lockstep(*_expand_escapes(lo, hi, *gammas))
  # Few streams: splice the escape decisions in with plain lists.
  eb, ej, gamma, neg = (x.tolist() for x in gammas)
  lo, hi = lo.tolist(), hi.tolist()
  for e in reversed(range(len(eb))):
    b, j, g, sign = eb[e], ej[e], gamma[e], int(neg[e])
    nb = g.bit_length()
    bits = [0] * (nb - 1) + [(g >> i) & 1 for i in range(nb - 1, -1, -1)]
    bits.append(sign)
    lo[b][j + 1:j + 1] = [bit * _HALF for bit in bits]
    hi[b][j + 1:j + 1] = [bit * _HALF + _HALF for bit in bits]
  return [_code_stream(l, h) for l, h in zip(lo, hi)]


def _escape_gammas(sym, escape, escaped):
  """Positions, Elias-gamma values and signs of the escaped symbols."""
  eb, ej = np.nonzero(escaped)
  s = sym[eb, ej]
  neg = s < 0
  gamma = np.where(neg, -s, s - escape[eb, ej] + 1)
  if gamma.max() > _MAX_GAMMA:
    k = int(np.argmax(gamma))
    raise ValueError(
        f"value={int(s[k])} (after cdf_offset) is too far outside the table: "
        f"its escape code would need gamma={int(gamma[k])} >= 2**30, which "
        "TFC cannot code (its encoder never terminates).")
  return eb, ej, gamma, neg


def _expand_escapes(lo, hi, eb, ej, gamma, neg):
  """Inserts the Elias-gamma decisions after each escape bin (numpy).

  Returns (batch, max_len) interval arrays and the length of each stream;
  positions past a stream's length are filler and must not be coded.
  """
  batch, n = lo.shape
  nbits = np.frexp(gamma.astype(np.float64))[1].astype(np.int64)
  extra = 2 * nbits                      # zeros, bits, sign
  counts = np.ones((batch, n), np.int64)
  counts[eb, ej] += extra
  ends = np.cumsum(counts, axis=1)
  starts = ends - counts
  lengths = ends[:, -1]
  width = int(lengths.max())
  out_lo = np.zeros((batch, width), np.int64)
  out_hi = np.full((batch, width), _ONE, np.int64)
  bidx = np.arange(batch)[:, None]
  out_lo[bidx, starts] = lo
  out_hi[bidx, starts] = hi
  # Decision r of an escape with nb bits: r < nb-1 zeros, then the nb bits
  # of gamma from the top, then the sign.
  total = int(extra.sum())
  group = np.repeat(np.arange(len(eb)), extra)
  r = np.arange(total) - np.repeat(np.cumsum(extra) - extra, extra)
  nb = nbits[group]
  bit_shift = np.maximum(2 * nb - 2 - r, 0)
  bit = np.where(
      r < nb - 1, 0,
      np.where(r < 2 * nb - 1, (gamma[group] >> bit_shift) & 1,
               neg[group].astype(np.int64)))
  rows = eb[group]
  cols = starts[eb, ej][group] + 1 + r
  out_lo[rows, cols] = bit * _HALF
  out_hi[rows, cols] = bit * _HALF + _HALF
  return out_lo, out_hi, lengths


def _code_stream(los, his):
  """Codes a sequence of intervals [lo, hi) / 2**16 into bytes.

  Works on 16-bit output digits: a carry out of `base` is added to the
  digits already written (it only ever runs over 0xFFFF digits into one
  that is not, which is exactly TFC's delayed-digit resolution).
  """
  digits = []
  base = 0
  size = 0x100000000
  for lo, hi in zip(los, his):
    a = size * lo >> 16
    size = (size * hi >> 16) - a
    base += a
    if base > 0xFFFFFFFF:
      base -= 0x100000000
      i = len(digits) - 1
      while digits[i] == 0xFFFF:
        digits[i] = 0
        i -= 1
      digits[i] += 1
    if size <= 0x10000:
      digits.append(base >> 16)
      base = (base & 0xFFFF) << 16
      size <<= 16
  return _finish(bytearray(struct.pack(f">{len(digits)}H", *digits)),
                 base, size)


def _increment(buf, end):
  """Adds one to the big-endian number buf[:end] (never overflows here)."""
  i = end - 1
  while buf[i] == 0xFF:
    buf[i] = 0
    i -= 1
  buf[i] += 1


def _finish(buf, base, size):
  """TFC's termination: the shortest tail inside [base, base + size)."""
  upper = base + size - 1
  if upper > _M32:
    # The interval straddles 2**32: pick 2**32, i.e. carry and stop; the
    # zeros after the carried digit are left implicit.
    _increment(buf, len(buf))
    return bytes(buf).rstrip(b"\0")
  if base == 0:
    return bytes(buf)
  top = ((base - 1) >> 24) + 1
  if top <= upper >> 24:
    buf.append(top)
  else:
    top = ((base - 1) >> 16) + 1
    buf.append(top >> 8)
    if top & 0xFF:
      buf.append(top & 0xFF)
  return bytes(buf)


def _code_lockstep(lo, hi, lengths):
  """`_code_stream` for many streams at once, all advancing together.

  Each step is a fixed handful of numpy calls over the batch. Output digits
  and carries are recorded per step and assembled afterwards (adding the
  carries late gives the same number as adding them at once).
  """
  batch, n = lo.shape
  lo_t = np.ascontiguousarray(lo.T)
  hi_t = np.ascontiguousarray(hi.T)
  active = None
  if lengths is not None:
    active = np.arange(n)[:, None] < lengths[None, :]
  base = np.zeros(batch, np.int64)
  size = np.full(batch, 1 << 32, np.int64)
  a = np.empty(batch, np.int64)
  shift = np.empty(batch, np.int64)
  tops = np.empty((n, batch), np.int64)
  renorm = np.empty((n, batch), bool)
  carry = np.empty((n, batch), bool)
  for t in range(n):
    np.multiply(size, lo_t[t], out=a)
    np.right_shift(a, 16, out=a)
    np.multiply(size, hi_t[t], out=size)
    np.right_shift(size, 16, out=size)
    np.subtract(size, a, out=size)
    np.add(base, a, out=base)
    np.greater(base, _M32, out=carry[t])
    r = renorm[t]
    np.less_equal(size, 0x10000, out=r)
    if active is not None:
      np.logical_and(r, active[t], out=r)
    np.right_shift(base, 16, out=tops[t])
    np.multiply(r, 16, out=shift)
    np.left_shift(base, shift, out=base)     # also drops the carry bit
    np.bitwise_and(base, _M32, out=base)
    np.left_shift(size, shift, out=size)
  np.bitwise_and(tops, 0xFFFF, out=tops)
  renorm_b = renorm.T
  written = np.cumsum(renorm_b, axis=1)      # digits after each step
  data = tops.T[renorm_b].astype(">u2").tobytes()
  ends = 2 * written[:, -1].cumsum() if n else np.zeros(batch, np.int64)
  carries = {}
  if n:
    cb, ct = np.nonzero(carry.T)
    before = written[cb, ct] - renorm_b[cb, ct]
    for b, w in zip(cb.tolist(), before.tolist()):
      carries.setdefault(b, []).append(w)
  out = []
  start = 0
  for b, (end, bs, sz) in enumerate(zip(np.asarray(ends).tolist(),
                                        base.tolist(), size.tolist())):
    buf = bytearray(data[start:end])
    for w in carries.get(b, ()):
      _increment(buf, 2 * w)
    out.append(_finish(buf, bs, sz))
    start = end
  return out


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------
def decode_channel(strings, cdf, shape, cdf_offset=None, *, check=True):
  """Inverse of `encode_channel`.

  Args:
    strings: sequence of bytes, one per stream.
    cdf: a `CdfTables`, or TFC's `cdf` lookup array.
    shape: shape of one stream's values (the `coding_rank` innermost axes).
    cdf_offset: per-table offsets added back (defaults to those of `cdf`).
    check: if true, raise `ValueError` when TFC's end-of-stream sanity check
      (`entropy_decode_finalize`) fails for any string. If false, return
      `(values, ok)` with a bool array `ok` per string instead.

  Returns:
    int32 array `(len(strings), *shape)` (and `ok` if `check` is false).
  """
  tables = _as_tables(cdf, cdf_offset)
  shape = tuple(int(s) for s in np.reshape(np.asarray(shape, np.int64), -1))
  strings = _as_bytes_list(strings)
  n = math.prod(shape)
  tidx, _, offs, _, _ = tables._channel_layout(n)
  tidx = tidx.tolist()
  syms = np.zeros((len(strings), n), np.int64)
  ok = np.zeros(len(strings), bool)
  for b, data in enumerate(strings):
    syms[b], ok[b] = _decode_stream(data, tidx, tables)
  return _finish_decode(syms + offs, ok, (len(strings),) + shape, check)


def decode_index(strings, indexes, cdf, cdf_offset=None, *, check=True):
  """Inverse of `encode_index`.

  Args:
    strings: sequence of bytes, one per stream.
    indexes: integer array `(len(strings), *coding_shape)`.
    cdf, cdf_offset, check: as in `decode_channel`.

  Returns:
    int32 array shaped like `indexes` (and `ok` if `check` is false).
  """
  decoder = IndexDecoder(strings, cdf, cdf_offset)
  values = decoder.decode(indexes)
  return _finish_decode(values, decoder.finish(), values.shape, check)


def _as_bytes_list(strings):
  if isinstance(strings, (bytes, bytearray)):
    raise TypeError("strings must be a sequence of bytes, not one bytes.")
  if isinstance(strings, np.ndarray) and strings.dtype.kind == "S":
    raise TypeError(
        "strings is a fixed-width bytes array, which drops trailing zero "
        "bytes; pass a list or an object array (as TF's .numpy() gives).")
  out = []
  for s in np.asarray(strings, dtype=object).ravel().tolist():
    if not isinstance(s, (bytes, bytearray, memoryview)):
      raise TypeError(f"strings must hold bytes, got {type(s).__name__}.")
    out.append(bytes(s))
  return out


def _int32_values(values, shape):
  if values.size and (values.min() < _I32_MIN or values.max() > _I32_MAX):
    raise ValueError("Decoded value overflows int32: corrupt string?")
  return values.astype(np.int32).reshape(shape)


def _finish_decode(values, ok, shape, check):
  values = _int32_values(values, shape)
  if not check:
    return values, ok
  if not ok.all():
    bad = np.flatnonzero(~ok).tolist()
    raise ValueError(
        f"Range decoder sanity check failed for string(s) {bad[:10]}: the "
        "string is corrupt or truncated, or does not match the tables/shape.")
  return values


class IndexDecoder:
  """Decodes indexed strings a part at a time, one decoder state per string.

  A conditional latent is decoded slice by slice, each slice's tables
  depending on the slices before; TFC passes its decoder handle from one
  `entropy_decode_index` to the next, and this is that handle.

  Args:
    strings: sequence of bytes, one per stream.
    cdf, cdf_offset: as in `decode_index`.
  """

  def __init__(self, strings, cdf, cdf_offset=None):
    self.tables = _as_tables(cdf, cdf_offset)
    self._streams = [_StreamDecoder(data)
                     for data in _as_bytes_list(strings)]

  def decode(self, indexes):
    """The next values: int32 shaped like `indexes` (len(strings), ...)."""
    idx, flat = _stream_indexes(indexes, len(self._streams),
                                self.tables.num_tables)
    syms = np.zeros(flat.shape, np.int64)
    for b, stream in enumerate(self._streams):
      syms[b] = stream.decode(flat[b].tolist(), self.tables)
    return _int32_values(syms + self.tables.offsets[flat], idx.shape)

  def finish(self):
    """bool per string: whether it passed TFC's end-of-stream check."""
    return np.array([stream.ok() for stream in self._streams], bool)


class _StreamDecoder:
  """The decoder state of one string, resumable between calls."""

  def __init__(self, data):
    self.nbytes = len(data)
    if self.nbytes & 1:
      data += b"\0"
    words = struct.unpack(f">{len(data) // 2}H", data)
    self.nwords = len(words)
    self.words = words + (0, 0)
    self.value = self.words[0] << 16 | self.words[1]
    self.pos = 2                   # 16-bit words read, including past end
    self.base = 0
    self.size = 0x100000000
    self.escape_steps = (ESCAPE_STEPS_PER_BYTE * self.nbytes +
                         _ESCAPE_ALLOWANCE)  # left to take

  def decode(self, tidx, tables):
    """Table-relative symbols of the next values, tables[tidx[i]] each."""
    words, nwords = self.words, self.nwords
    value, pos, base, size = self.value, self.pos, self.base, self.size
    cdfs = tables._dec_cdfs
    escapes = tables._dec_escape
    bisect_left = bisect.bisect_left
    out = []
    append = out.append
    for t in tidx:
      c = cdfs[t]
      # Smallest k with size * c[k] >= (value - base + 1) * 2**16.
      k = bisect_left(c, (((((value - base) & _M32) + 1) << 16) + size - 1)
                      // size, 1)
      a = size * c[k - 1] >> 16
      size = (size * c[k] >> 16) - a
      base = (base + a) & _M32
      if size <= 0x10000:
        base = base << 16 & _M32
        size <<= 16
        value = (value << 16 & _M32) | (words[pos] if pos < nwords else 0)
        pos += 1
      k -= 1
      if k == escapes[t]:
        k, steps, base, size, value, pos = _decode_escape(
            k, base, size, value, pos, words, nwords)
        self.escape_steps -= steps
        if self.escape_steps < 0:
          raise ValueError(
              f"String of {self.nbytes} bytes: its escape codes need more "
              f"steps than the numpy decoder's bound "
              f"({ESCAPE_STEPS_PER_BYTE} a byte).")
      append(k)
    self.value, self.pos, self.base, self.size = value, pos, base, size
    return out

  def ok(self):
    """TFC's end-of-stream check after the last value."""
    return (self.pos * 2 >= self.nbytes and
            _final_ok(self.base, self.size, self.value))


def _decode_stream(data, tidx, tables):
  """Decodes one stream; returns (table-relative symbols, sanity ok)."""
  stream = _StreamDecoder(data)
  return stream.decode(tidx, tables), stream.ok()


def _decode_escape(esc, base, size, value, pos, words, nwords):
  """Reads the Elias-gamma tail of an escape; returns its value, its steps
  (`ESCAPE_STEPS_PER_BYTE`) and the decoder state.

  Its 1-bit decisions run inline in one loop (a third faster than a call
  each): bit_length(g) - 1 zeros, g's bits below its leading 1, the sign.
  """
  zeros = 0
  left = -1  # bits of g still to read; -1 while counting zeros
  g = 1
  while True:
    half = size >> 1
    if ((value - base) & _M32) < half:
      bit = 0
      size = half
    else:
      bit = 1
      base = (base + half) & _M32
      size -= half
    if size <= 0x10000:
      base = base << 16 & _M32
      size <<= 16
      value = (value << 16 & _M32) | (words[pos] if pos < nwords else 0)
      pos += 1
    if left > 0:
      g = g << 1 | bit
      left -= 1
    elif left == 0:
      k = -g if bit else g + esc - 1
      return k, 2 * zeros + 2 + _ESCAPE_STEPS, base, size, value, pos
    elif bit:
      left = zeros
    else:
      zeros += 1
      if zeros > _MAX_ZEROS:
        raise ValueError(
            "Corrupt string: escape code longer than TFC can write.")


def _final_ok(base, size, value):
  """TFC's weak end-of-stream check on the decoder state."""
  upper = (base + size - 1) & _M32
  if base == 0 or upper < base:
    return value == 0
  shift = 24 if ((base - 1) >> 24) < (upper >> 24) else 16
  return ((((base - 1) >> shift) + 1) << shift) & _M32 == value
