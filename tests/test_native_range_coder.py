"""The C range coder (tfvaeclf.coding.native) against the numpy coder and TFC.

Bytes and values must equal those of TFC 2.14.1's ops and of
tfvaeclf.coding.range_coder for every precision, table kind and value; the
decoder must finish quickly on any bytes, and reject strings shorter than
what a TFC encoder writes. TensorFlow is the reference here only.
"""

import ctypes
import os
import pickle
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tfvaeclf.coding import native, range_coder as rc

# TFC's ops, called as the numpy coder's tests call them.
from tests.test_edge_range_coder import (random_lookup, tf, tfc, tfc_decode,
                                         tfc_encode, truncations_and_flips)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "tfvaeclf", "coding", "csrc", "range_coder.c")
PAST_END = -10  # RC_ERR_PAST_END of range_coder.h

pytestmark = pytest.mark.skipif(
    not native.available() and shutil.which("cc") is None,
    reason="no C compiler")


def test_builds_where_a_compiler_is():
  assert native.available()
  assert os.path.basename(native.library_path()).startswith("range_coder-")


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def mixed_lookup(rng, precision, overflow, max_bins=40):
  """One TFC section per flag: escape coding on (True) or off (False)."""
  return np.concatenate([
      random_lookup(rng, precision, 1, max_bins=max_bins, overflow=bool(o))
      for o in overflow])


def random_values(rng, tables, tidx, escape_rate=0.1, far=False):
  """Values (offsets included) for tables `tidx`: bins of the table, and
  escapes of both signs where the table has overflow coding."""
  overflow = tables.overflow[tidx]
  direct = np.where(overflow, tables.num_symbols[tidx] - 1,
                    tables.num_symbols[tidx])
  sym = (rng.random(tidx.shape) * direct).astype(np.int64)
  escape = overflow & (rng.random(tidx.shape) < escape_rate)
  big = 10 ** rng.integers(1, 9 if far else 4, size=tidx.shape)
  outside = np.where(rng.random(tidx.shape) < 0.5,
                     -rng.integers(1, big + 1),
                     direct + rng.integers(0, big + 1))
  sym[escape] = outside[escape]
  return sym + tables.offsets[tidx]


def channel_tidx(tables, shape):
  return np.broadcast_to(np.arange(shape[-1]) % tables.num_tables, shape)


def assert_coders_agree(lookup, offsets, values, index=None):
  """C bytes (from int32 and from 16-bit CDFs) == numpy bytes == TFC
  bytes; every decoder gets `values`."""
  tables = rc.CdfTables(lookup, offsets)
  n = values.shape[1]
  tidx = channel_tidx(tables, values.shape) if index is None else index
  symbols = values - tables.offsets[tidx]
  if index is None:
    ours = native.encode_channel(values, tables)
    assert ours == rc.encode_channel(values, tables)
    assert ours == native.encode_channel(values, tables, sixteen_bit=True)
    np.testing.assert_array_equal(native.decode_channel(ours, tables, [n]),
                                  values)
    np.testing.assert_array_equal(rc.decode_channel(ours, tables, [n]),
                                  values)
  else:
    ours = native.encode_index(values, index, tables)
    assert ours == rc.encode_index(values, index, tables)
    assert ours == native.encode_index(values, index, tables,
                                       sixteen_bit=True)
    np.testing.assert_array_equal(native.decode_index(ours, index, tables),
                                  values)
  assert ours == tfc_encode(lookup, symbols, index=index)
  theirs, sanity = tfc_decode(ours, lookup, [n], index=index)
  np.testing.assert_array_equal(theirs, symbols)
  assert sanity.all()
  return ours


class Decoder(ctypes.Structure):
  """`rc_decoder` of range_coder.h (keep the two in step)."""
  _fields_ = [("data", ctypes.c_void_p), ("length", ctypes.c_int64),
              ("position", ctypes.c_int64), ("need", ctypes.c_int64),
              ("straddling", ctypes.c_int32), ("base", ctypes.c_uint32),
              ("size_minus1", ctypes.c_uint32),
              ("value", ctypes.c_uint32), ("status", ctypes.c_int)]


def c_decode(data, tables, n, sixteen_bit=False):
  """Channel-decodes one string with the streaming C API: (values, status
  of rc_decoder_finish, bytes read past the end)."""
  lib = native._library()  # pylint: disable=protected-access
  # pylint: disable-next=protected-access
  c_tables = native._c_tables(lib, tables, sixteen_bit)
  lib.rc_decoder_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p,
                                  ctypes.c_int32]
  lib.rc_decoder_get.argtypes = [ctypes.c_void_p] * 3
  lib.rc_decoder_finish.argtypes = [ctypes.c_void_p]
  dec = Decoder()
  lib.rc_decoder_init(ctypes.byref(dec), data, len(data))
  values = np.zeros(n, np.int32)
  out = ctypes.c_int32()
  for k in range(n):
    table = ctypes.addressof(c_tables.array[k % c_tables.num_tables])
    lib.rc_decoder_get(ctypes.byref(dec), table, ctypes.byref(out))
    values[k] = out.value
  return values, lib.rc_decoder_finish(ctypes.byref(dec)), (
      dec.position - len(data))


# ---------------------------------------------------------------------------
# Equality with numpy and TFC
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("precision", range(rc.PRECISION_MIN,
                                             rc.PRECISION_MAX + 1))
def test_channel_every_precision(precision):
  rng = np.random.default_rng(1000 + precision)
  for batch in (1, 3, 70):
    num_tables = int(rng.integers(1, 7))
    overflow = rng.random(num_tables) < 0.7
    lookup = mixed_lookup(rng, precision, overflow)
    offsets = rng.integers(-20, 20, size=num_tables)
    tables = rc.CdfTables(lookup, offsets)
    n = int(rng.integers(1, 6)) * num_tables + int(rng.integers(0, 3))
    values = random_values(rng, tables, channel_tidx(tables, (batch, n)))
    assert_coders_agree(lookup, offsets, values)


@pytest.mark.parametrize("precision", [1, 4, 9, 12, 15, 16])
def test_index_many_tables(precision):
  rng = np.random.default_rng(2000 + precision)
  for batch in (1, 5, 66):
    num_tables = int(rng.integers(20, 64))
    overflow = rng.random(num_tables) < 0.8
    lookup = mixed_lookup(rng, precision, overflow, max_bins=100)
    offsets = rng.integers(-50, 50, size=num_tables)
    tables = rc.CdfTables(lookup, offsets)
    index = rng.integers(0, num_tables, size=(batch, 97))
    values = random_values(rng, tables, index, far=True)
    assert_coders_agree(lookup, offsets, values, index=index)


@pytest.mark.parametrize("decoder", [native.IndexDecoder, rc.IndexDecoder])
def test_index_decoder_resumes_like_tfcs_handle(decoder):
  """Decoding a string in parts (a conditional latent's slices) gives the
  values and end check of decoding it whole, and of TFC's decoder handle
  passed from one entropy_decode_index to the next."""
  rng = np.random.default_rng(31)
  lookup = mixed_lookup(rng, 14, rng.random(24) < 0.8, max_bins=60)
  offsets = rng.integers(-30, 30, size=24)
  tables = rc.CdfTables(lookup, offsets)
  index = rng.integers(0, 24, size=(6, 5, 20))
  values = random_values(rng, tables, index, far=True)
  strings = native.encode_index(values, index, tables, coding_rank=2)
  # Corrupt two, so that the end check has work to do.
  strings[1] += b"\x07\x01\x02"
  strings[4] = b"\x12" + strings[4][1:]
  ours = decoder(strings, tables)
  parts = [ours.decode(index[:, k]) for k in range(5)]
  np.testing.assert_array_equal(np.delete(np.stack(parts, 1), [1, 4], 0),
                                np.delete(values, [1, 4], 0))
  whole, ok = native.decode_index(strings, index, tables, check=False)
  np.testing.assert_array_equal(np.stack(parts, 1), whole)
  np.testing.assert_array_equal(ours.finish(), ok)
  assert ok.tolist() == [True, False, True, True, False, True]
  handle = tfc.create_range_decoder(
      tf.constant(np.array(strings, object), tf.string), lookup)
  for k, part in enumerate(parts):
    handle, symbols = tfc.entropy_decode_index(
        handle, index[:, k].astype(np.int32), [20], tf.int32)
    np.testing.assert_array_equal(
        np.delete(symbols.numpy() + offsets[index[:, k]], [1, 4], 0),
        np.delete(part, [1, 4], 0))
  assert tfc.entropy_decode_finalize(handle).numpy()[[0, 2, 3, 5]].all()
  with pytest.raises(ValueError, match="index=24"):
    decoder(strings, tables).decode(np.full((6, 3), 24))
  with pytest.raises(ValueError, match="number of strings"):
    decoder(strings, tables).decode(index[:5, 0])


@pytest.mark.parametrize("c_coder", [True, False])
def test_an_isolating_index_decoder_fails_string_by_string(c_coder,
                                                           monkeypatch):
  """A batch's bad strings (bytes after the end; an escape code no encoder
  writes) fail alone, in the C coder and the numpy one: `decode` does not
  raise, the others decode to their values, `errors` tells why."""
  if not c_coder:
    monkeypatch.setattr(native, "_lib", None)  # as without a compiler
  assert native.available() == c_coder
  # Value 0 in a 1/65536 bin, every other value an escape.
  tables = rc.CdfTables([-16, 0, 1, 65536])
  values = np.random.default_rng(5).integers(-5, 6, size=(4, 2, 10))
  index = np.zeros_like(values)
  strings = native.encode_index(values, index, tables, coding_rank=2)
  strings[1] += b"\x07\x01\x02"
  strings[2] = b"\0\1" + bytes(40)  # an escape, then zeros: too long
  ours = native.IndexDecoder(strings, tables, isolate=True)
  parts = np.stack([ours.decode(index[:, k]) for k in range(2)], 1)
  np.testing.assert_array_equal(parts[[0, 3]], values[[0, 3]])
  errors = ours.errors()
  assert errors[0] is None and errors[3] is None, errors
  assert errors[1] and "escape" not in errors[1], errors
  assert "escape code" in errors[2], errors
  assert ours.finish().tolist() == [True, False, False, True]
  plain = native.IndexDecoder(strings, tables)
  with pytest.raises(ValueError, match="escape code"):
    for k in range(2):
      plain.decode(index[:, k])


def test_the_decoder_refuses_sixteen_bit_tables():
  """16-bit CDFs are for encoders (a microcontroller's flash); the decoder
  reads int32 ones and, given 16-bit ones, stops at the first value with
  RC_ERR_TABLE rather than read a NULL table."""
  rng = np.random.default_rng(7)
  lookup = mixed_lookup(rng, 16, [True, False])
  tables = rc.CdfTables(lookup, [0, 3])
  values = random_values(rng, tables, channel_tidx(tables, (1, 8)))
  data = native.encode_channel(values, tables, sixteen_bit=True)[0]
  decoded, status, _ = c_decode(data, tables, 8)
  assert status == 0
  np.testing.assert_array_equal(decoded, values[0])
  _, status, _ = c_decode(data, tables, 8, sixteen_bit=True)
  assert status == -2  # RC_ERR_TABLE


def test_extreme_values_and_offsets():
  rng = np.random.default_rng(3)
  lookup = random_lookup(rng, 16, 3)
  limit = 2 ** 30 - 1                 # the largest gamma TFC can code
  lo, hi = -2 ** 31, 2 ** 31 - 1
  offsets = np.array([lo + 10, 0, hi - 300])
  tables = rc.CdfTables(lookup, offsets)
  escape = tables.num_symbols - 1
  rows = [[lo + 10, -limit, hi - 300],
          [lo + 9, limit + escape[1] - 1, hi],
          [lo, 0, hi - 301],
          [lo + 10 + escape[0] + 5, escape[1], hi - 300 + escape[2] - 1]]
  values = np.array(rows, np.int64)
  assert_coders_agree(lookup, offsets, values)
  for bad in ([[0, limit + escape[1], 0]], [[0, -limit - 1, 0]],
              [[0, lo, 0]]):
    with pytest.raises(ValueError, match="2\\*\\*30"):
      native.encode_channel(bad, tables)
  # Beyond int32 the numpy coder takes over, with the same result.
  wide = rc.CdfTables(lookup, [2 ** 40, 0, -2 ** 40])
  values = np.array([[2 ** 40 + 1, 3, -2 ** 40]])
  strings = rc.encode_channel(values, wide)
  assert native.encode_channel(values, wide) == strings
  with pytest.raises(ValueError, match="overflows int32"):
    native.decode_channel(strings, wide, [3])


def test_empty_and_long_streams():
  rng = np.random.default_rng(4)
  lookup = random_lookup(rng, 12, 3)
  tables = rc.CdfTables(lookup)
  for batch in (1, 80):
    empty = np.zeros((batch, 0), np.int64)
    assert native.encode_channel(empty, tables) == [b""] * batch
    assert native.encode_index(empty, empty, tables) == [b""] * batch
    assert native.decode_channel([b""] * batch, tables, [0]).shape == (
        batch, 0)
  assert native.encode_channel(np.zeros((0, 5), np.int64), tables) == []
  assert native.decode_channel([], tables, [5]).shape == (0, 5)
  lookup = random_lookup(rng, 16, 16, max_bins=300)
  tables = rc.CdfTables(lookup, rng.integers(-100, 100, size=16))
  values = random_values(rng, tables, channel_tidx(tables, (2, 20000)),
                         escape_rate=0.02, far=True)
  assert_coders_agree(lookup, tables.offsets, values)


def test_coding_rank_and_batch_axes():
  rng = np.random.default_rng(5)
  lookup = random_lookup(rng, 10, 4)
  tables = rc.CdfTables(lookup)
  values = random_values(rng, tables, channel_tidx(tables, (2, 3, 5, 4)))
  for rank in (1, 2, 4):
    assert native.encode_channel(values, tables, coding_rank=rank) == (
        rc.encode_channel(values, tables, coding_rank=rank))
  strings = native.encode_channel(values, tables, coding_rank=2)
  np.testing.assert_array_equal(
      native.decode_channel(strings, tables, (5, 4)).reshape(values.shape),
      values)
  index = rng.integers(0, 4, size=values.shape)
  strings = native.encode_index(values, index, tables, coding_rank=3)
  assert strings == rc.encode_index(values, index, tables, coding_rank=3)
  np.testing.assert_array_equal(
      native.decode_index(strings, index.reshape(2, 3, 5, 4), tables),
      values)


def test_streams_encoder_codes_each_stream_as_alone():
  """One C call for a channel stream and an indexed one (escapes, far
  ones, need the retry with room for the worst case) writes what each
  stream's own call writes; values that only the numpy coder takes, and
  errors, go to the per-stream calls."""
  rng = np.random.default_rng(12)
  channel = rc.CdfTables(mixed_lookup(rng, 12, [1, 0, 1, 1]),
                         rng.integers(-5, 5, size=4))
  indexed = rc.CdfTables(random_lookup(rng, 16, 6, overflow=True),
                         rng.integers(-20, 0, size=6))
  coders = [native.StreamsEncoder([(channel, 2), (indexed, 1)],
                                  numpy_coder=numpy_coder)
            for numpy_coder in (False, True)]
  for batch in (1, 1, 7, 0, 1, *range(2, 12)):  # more shapes than it keeps
    index = rng.integers(0, 6, size=(batch, 50))
    values = [random_values(rng, channel,
                            channel_tidx(channel, (batch, 3, 4)),
                            escape_rate=.3, far=batch == 7),
              random_values(rng, indexed, index,
                            escape_rate=.3).astype(np.int32)]
    expected = [rc.encode_channel(values[0], channel, coding_rank=2),
                rc.encode_index(values[1], index, indexed)]
    for coder in coders:
      assert coder.encode(values, [None, index]) == expected
  wide = rc.CdfTables(random_lookup(rng, 12, 1), [2 ** 40])
  values = np.array([[2 ** 40 + 1, 2 ** 40]])
  assert native.StreamsEncoder([(wide, 1)]).encode([values], [None]) == [
      rc.encode_channel(values, wide)]
  zeros = [np.zeros((1, 3, 4), np.int64), np.zeros((1, 50), np.int32)]
  for values, indexes in (
      (zeros, [None, index[:1] + 6]),                    # no such table
      ([zeros[0] + 2 ** 40, zeros[1]], [None, index[:1]]),  # gamma >= 2**30
      ([zeros[0] + .5, zeros[1]], [None, index[:1]])):    # not integers
    with pytest.raises((ValueError, TypeError)) as expected:
      coders[1].encode(values, indexes)
    with pytest.raises(expected.type, match=re.escape(str(expected.value))):
      coders[0].encode(values, indexes)


def test_errors_match_the_numpy_coder():
  tables = rc.CdfTables([-8, 0, 100, 100, 200, 256, 5, 0, 3, 20, 32])
  calls = [
      lambda m: m.encode_channel([[1, 0]], tables),        # zero probability
      lambda m: m.encode_channel([[0, 5]], tables),        # no overflow bin
      lambda m: m.encode_channel([[0, -1]], tables),
      lambda m: m.encode_index([[0, 1]], [[0, 2]], tables),
      lambda m: m.encode_index([[0, 1]], [[0]], tables),
      lambda m: m.encode_channel(np.zeros((1, 2), np.float32), tables),
      lambda m: m.encode_channel(np.zeros((1, 2), np.int32), tables,
                                 coding_rank=3),
      lambda m: m.decode_index([b""], [[0, -1]], tables),
      lambda m: m.decode_index([b"", b""], [[0, 1]], tables),
      lambda m: m.decode_channel(np.array([b"ab"]), tables, [2]),
      lambda m: m.decode_channel(b"ab", tables, [2]),
  ]
  for call in calls:
    with pytest.raises((ValueError, TypeError)) as expected:
      call(rc)
    with pytest.raises(expected.type, match=re.escape(str(expected.value))):
      call(native)


def test_real_entropy_models():
  tf.random.set_seed(1)
  batched = tfc.ContinuousBatchedEntropyModel(
      tfc.NoisyLogistic(loc=tf.zeros([8]), scale=tf.linspace(0.1, 4., 8)),
      coding_rank=3, compression=True, range_coder_precision=16,
      offset_heuristic=False)
  tables = rc.CdfTables(batched.cdf.numpy(), batched.cdf_offset.numpy())
  rng = np.random.default_rng(6)
  latent = (rng.normal(size=(5, 7, 7, 8)) * 3).astype(np.float32)
  latent[0, 0, 0, :3] = [1e5, -1e5, 300]
  values = rc.quantize(latent)
  ours = native.encode_channel(values, tables, coding_rank=3)
  assert ours == batched.compress(latent).numpy().tolist()
  np.testing.assert_array_equal(
      native.decode_channel(ours, tables, (7, 7, 8)), values)
  indexed = tfc.LocationScaleIndexedEntropyModel(
      tfc.NoisyNormal, 10, lambda i: tf.exp(i / 3 - 1), coding_rank=1,
      compression=True, range_coder_precision=14)
  tables = rc.CdfTables(indexed.cdf.numpy(), indexed.cdf_offset.numpy())
  x = (rng.normal(size=(4, 30)) * 5).astype(np.float32)
  loc = rng.normal(size=x.shape).astype(np.float32)
  scale_index = rng.integers(0, 10, size=x.shape)
  values = rc.quantize(x, loc)
  ours = native.encode_index(values, scale_index, tables)
  assert ours == indexed.compress(
      x, scale_index.astype(np.float32), loc).numpy().tolist()
  np.testing.assert_array_equal(
      native.decode_index(ours, scale_index, tables), values)


def test_worst_case_output_size_and_capacity():
  """RC_MAX_BYTES(n, e) = 2 + 2 n + 120 e bounds every string, and a
  buffer one byte short gives RC_ERR_CAPACITY without a write past it."""
  lib = native._library()  # pylint: disable=protected-access
  lib.rc_encode.argtypes = [ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p,
                            ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p,
                            ctypes.c_int32]
  limit = 2 ** 30 - 1
  rng = np.random.default_rng(12)
  cases = []
  for precision in (1, 16):
    tables = rc.CdfTables.from_cdfs([[0, 1, 1 << precision]], precision)
    cases.append((tables, np.full(500, 0), 0))             # tiny bins
    cases.append((tables, rng.choice([-limit, limit], size=500), 500))
  for tables, values, escapes in cases:
    (string,) = native.encode_channel(values[None], tables)
    assert len(string) <= 2 + 2 * len(values) + 120 * escapes
    c_tables = native._c_tables(lib, tables)  # pylint: disable=protected-access
    v32 = values.astype(np.int32)
    for capacity, expected in ((len(string), len(string)),
                               (len(string) - 1, -7)):
      out = np.full(len(string) + 8, 0xAB, np.uint8)
      assert lib.rc_encode(c_tables.pointer, 1, None, v32.ctypes.data,
                           len(v32), out.ctypes.data, capacity) == expected
      assert (out[capacity:] == 0xAB).all()
    assert out[:len(string) - 1].tobytes() == string[:-1]


# ---------------------------------------------------------------------------
# The end of a string
# ---------------------------------------------------------------------------
def test_every_valid_tail_is_accepted():
  """Strings re-encoded from what any bytes decode to are valid TFC
  strings, some ending while the interval straddles 2**32, with 6 to 30
  implicit trailing zeros: all decode, to TFC's values."""
  rng = np.random.default_rng(7)
  past_end = set()
  for trial in range(600):
    precision = (16, 12, 8, 3)[trial % 4]
    lookup = mixed_lookup(rng, precision, rng.random(2) < 0.5)
    tables = rc.CdfTables(lookup)
    n = int(rng.integers(1, 40))
    prefix = rng.integers(0, 256, size=int(rng.integers(0, 8)),
                          dtype=np.uint8).tobytes()
    try:
      values = rc.decode_channel([prefix], tables, [n], check=False)[0][0]
      (string,) = rc.encode_channel(values[None], tables)
    except ValueError:              # an escape too long to code
      continue
    decoded, status, extra = c_decode(string, tables, n)
    assert status == 0
    np.testing.assert_array_equal(decoded, values)
    past_end.add(extra)
    if trial % 20 == 0:
      assert [string] == tfc_encode(lookup, values[None])
  # At most 4 implicit bytes, or 4 + (2 - w) + 2 s while straddling.
  assert {2, 3, 4, 5} <= past_end and max(past_end) > 12


def test_reading_past_what_an_encoder_leaves_out_is_an_error():
  tables = rc.CdfTables([-12, 0, 4000, 4090, 4096])
  # b"" reads as zeros forever: TFC (and the numpy coder) decode zeros and
  # call it sane; no encoder writes b"" for 1000 values.
  (theirs,), (sanity,) = tfc_decode([b""], tables.flat, [1000])
  assert sanity and not theirs.any()
  _, ok = rc.decode_channel([b""], tables, [1000], check=False)
  assert ok.all()
  assert native.decode_channel([b""], tables, [1000], check=False)[1].tolist(
  ) == [False]
  assert c_decode(b"", tables, 1000)[1] == PAST_END
  with pytest.raises(ValueError, match="sanity check"):
    native.decode_channel([b""], tables, [1000])
  # The encoder's own string for those zeros is accepted.
  (string,) = native.encode_channel(np.zeros((1, 1000), np.int64), tables)
  assert len(string) > 2 and not native.decode_channel(
      [string], tables, [1000]).any()
  assert c_decode(string[:-2], tables, 1000)[1] == PAST_END


def test_corrupt_strings_agree_with_tfc():
  rng = np.random.default_rng(8)
  lookup = random_lookup(rng, 12, 4)
  tables = rc.CdfTables(lookup)
  values = random_values(rng, tables, channel_tidx(tables, (1, 64)),
                         escape_rate=0.03)
  (good,) = native.encode_channel(values, tables)
  corrupt = truncations_and_flips(good, rng, 100)
  corrupt += [good + extra for extra in (b"\0", b"\1", b"\0\0\0", b"\xff")]
  stricter = 0
  for data in corrupt:
    try:
      ours, ok = native.decode_channel([data], tables, [64], check=False)
    except ValueError as e:                  # an escape TFC would loop on
      assert "escape code" in str(e)
      with pytest.raises(ValueError, match="escape code"):
        rc.decode_channel([data], tables, [64], check=False)
      continue
    theirs, sanity = tfc_decode([data], lookup, [64])
    if ok[0]:
      assert sanity[0]
      np.testing.assert_array_equal(ours, theirs)
    elif sanity[0]:
      stricter += 1
      assert c_decode(data, tables, 64)[1] == PAST_END
  assert stricter > 0


# ---------------------------------------------------------------------------
# Bounded work on any bytes
# ---------------------------------------------------------------------------
def fuzz_corpus(rng, count):
  """(tables, shape, index, string) cases: garbage, mutations of valid
  strings, and tables on which bytes force long escapes."""
  lookup = random_lookup(rng, 16, 8, max_bins=30)
  factorized = rc.CdfTables(lookup)
  indexed = rc.CdfTables(np.concatenate(
      [lookup, random_lookup(rng, 16, 8, max_bins=30)]))
  escapes = rc.CdfTables([-16, 0, 1, 65536, -16, 0, 65535, 65536])
  valid = native.encode_channel(
      random_values(rng, factorized, channel_tidx(factorized, (50, 392)),
                    escape_rate=0.02), factorized)
  cases = []
  for i in range(count):
    kind = i % 5
    if kind == 1:
      data = bytearray(valid[i % len(valid)])
      for _ in range(int(rng.integers(1, 4))):
        if data:
          data[rng.integers(len(data))] = int(rng.integers(0, 256))
      cut = int(rng.integers(0, len(data) + 1))
      data = bytes(data[:cut]) + (valid[(i + 1) % len(valid)][cut:]
                                  if rng.random() < 0.5 else b"")
    elif kind == 3:              # the escapes table's bin 1, then 0 bits
      k = int(rng.integers(0, 300))
      data = b"\0\1" + bytes(k) if i % 2 else b"\xff" * k
    else:
      size = {0: (0, 80), 2: (500, 5000), 4: (0, 600)}[kind]
      data = rng.integers(0, 256, size=int(rng.integers(*size)),
                          dtype=np.uint8).tobytes()
    if kind in (3, 4):
      cases.append((escapes, (int(rng.integers(1, 100)),), None, data))
    elif i % 2:
      index = rng.integers(0, 16, size=(1, 392))
      cases.append((indexed, (392,), index, data))
    else:
      cases.append((factorized, (7, 7, 8), None, data))
  return cases


def decode_case(tables, shape, index, data):
  """Decodes like the server would: "ok", "insane" (check fails) or
  "error" (ValueError)."""
  try:
    if index is None:
      _, ok = native.decode_channel([data], tables, shape, check=False)
    else:
      _, ok = native.decode_index([data], index, tables, check=False)
  except ValueError:
    return "error"
  return "ok" if ok[0] else "insane"


@pytest.mark.usefixtures("no_gc_pauses")
def test_fuzz_bounded_work():
  assert native.available()  # loaded (and built) before the clock starts
  rng = np.random.default_rng(9)
  cases = fuzz_corpus(rng, 3000)
  worst = 0.0
  verdicts = {}
  start = time.perf_counter()
  for case in cases:
    t0 = time.perf_counter()
    verdict = decode_case(*case)
    worst = max(worst, time.perf_counter() - t0)
    verdicts[verdict] = verdicts.get(verdict, 0) + 1
  total = time.perf_counter() - start
  assert worst < 0.05, worst
  assert total < 15, total
  assert set(verdicts) == {"ok", "insane", "error"}, verdicts
  # Work grows with the values decoded, whatever the bytes say: values that
  # are all escapes (up to 62 steps each) from 1 MB of random bytes.
  escapes = rc.CdfTables([-16, 0, 1, 65536])
  data = rng.integers(0, 256, size=1 << 20, dtype=np.uint8).tobytes()
  for n in (2000, 200000):
    t0 = time.perf_counter()
    native.decode_channel([data], escapes, [n], check=False)
    assert time.perf_counter() - t0 < 0.05 + n * 2e-6


SANITIZED = textwrap.dedent("""
    import pickle, sys
    import numpy as np
    from tfvaeclf.coding import native, range_coder as rc
    assert native.available(), "no sanitized build"
    with open(sys.argv[1], "rb") as f:
      cases = pickle.load(f)
    rng = np.random.default_rng(0)
    for flat, shape, index, data in cases:
      tables = rc.CdfTables(flat)
      values = rng.integers(-3, 30, size=(2, *shape))
      values[rng.random(values.shape) < 0.01] = 10 ** 8
      try:
        native.encode_channel(values, tables, coding_rank=len(shape))
      except ValueError:       # zero probability
        pass
      for strings in ([data], [data, data[:len(data) // 2]]):
        try:
          if index is None:
            native.decode_channel(strings, tables, shape, check=False)
          else:
            native.decode_index(strings, index.repeat(len(strings), 0),
                                tables, check=False)
        except ValueError:
          pass
    print("clean")
""")


@pytest.mark.skipif(platform.system() != "Linux", reason="gcc sanitizers")
def test_fuzz_under_sanitizers(tmp_path):
  """UB and out-of-bounds reads abort the C code built with UBSan/ASan."""
  asan = subprocess.run(["cc", "-print-file-name=libasan.so"],
                        capture_output=True, text=True).stdout.strip()
  if not os.path.isabs(asan):
    pytest.skip("no libasan")
  cases = [(t.flat, shape, index, data) for t, shape, index, data
           in fuzz_corpus(np.random.default_rng(10), 1500)]
  with open(tmp_path / "cases.pickle", "wb") as f:
    pickle.dump(cases, f)
  env = dict(
      os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=str(tmp_path),
      CC="cc -g -fsanitize=address,undefined -fno-sanitize-recover=all",
      LD_PRELOAD=asan, ASAN_OPTIONS="detect_leaks=0",
      PYTHONMALLOC="malloc")   # each bytes object its own heap block
  run = subprocess.run(
      [sys.executable, "-c", SANITIZED, str(tmp_path / "cases.pickle")],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0 and "clean" in run.stdout, run.stderr[-3000:]


# ---------------------------------------------------------------------------
# Building, fallback, and no TensorFlow
# ---------------------------------------------------------------------------
def test_source_is_portable_c99_without_float():
  flags = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Wconversion",
           "-Werror", "-fsyntax-only"]
  if platform.machine() in ("x86_64", "aarch64"):
    flags.append("-mgeneral-regs-only")      # any float is an error
  subprocess.run(["cc", *flags, SOURCE], check=True)
  with open(SOURCE) as f:
    source = f.read()
  with open(SOURCE.replace(".c", ".h")) as f:
    header = f.read()
  includes = sorted(line.split()[1] for line in (source + header).splitlines()
                    if line.startswith("#include"))
  assert includes == ['"range_coder.h"', "<stddef.h>", "<stdint.h>"]
  for word in ("malloc", "free(", "float", "double", "alloca"):
    assert word not in source


CODE = textwrap.dedent("""
    import logging, sys
    class NoTensorFlow:
      def find_spec(self, name, path=None, target=None):
        if name.startswith(("tensorflow", "keras")):
          raise ImportError(name)
    sys.meta_path.insert(0, NoTensorFlow())
    logging.basicConfig(format="%(message)s")
    from tfvaeclf.coding import native, range_coder as rc
    tables = rc.CdfTables([-8, 0, 100, 256, -4, 0, 3, 16])
    values = [[0, 1, -5, 40, 1, 2]]
    strings = native.encode_channel(values, tables)
    assert strings == rc.encode_channel(values, tables)
    assert native.decode_channel(strings, tables, [6]).tolist() == values
    print(native.available(), native.library_path())
""")


def run_code(tmp_path, **env):
  return subprocess.run(
      [sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True,
      timeout=300, env=dict(os.environ, PYTHONPATH=ROOT,
                            XDG_CACHE_HOME=str(tmp_path), **env))


def test_no_compiler_falls_back_to_numpy(tmp_path):
  run = run_code(tmp_path, CC="/nonexistent/cc")
  assert run.returncode == 0, run.stderr
  assert run.stdout.startswith("False ")
  assert run.stderr.count("\n") == 1
  assert "the numpy coder runs" in run.stderr


def test_concurrent_first_use_without_tensorflow(tmp_path):
  runs = [subprocess.Popen(
      [sys.executable, "-c", CODE], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT, XDG_CACHE_HOME=str(tmp_path)))
          for _ in range(3)]
  outputs = {run.communicate(timeout=300)[0] for run in runs}
  assert all(run.returncode == 0 for run in runs)
  (output,) = outputs
  available, path = output.split()
  assert available == "True" and path.startswith(str(tmp_path))
  name = os.path.basename(path)
  assert sorted(os.listdir(os.path.dirname(path))) == [
      name, name + ".lock", name + ".sha256"]


# ---------------------------------------------------------------------------
# Trust in the cached library
# ---------------------------------------------------------------------------
@pytest.fixture(name="cache")
def fresh_cache(tmp_path, monkeypatch):
  """An empty cache dir of this user's, and no library loaded yet: the next
  call loads (or builds) the one of `library_path()` in it."""
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  # pylint: disable-next=protected-access
  monkeypatch.setattr(native, "_lib", native._UNSET)
  return tmp_path


def plant(path, source, tmp_path):
  """Compiles C `source` into the library at `path`, where the cache puts
  it."""
  c_file = tmp_path / "planted.c"
  c_file.write_text(source)
  os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
  subprocess.run(["cc", "-shared", "-fPIC", "-o", path, str(c_file)],
                 check=True)


def assert_numpy_runs_alone(caplog):
  """One warning, the numpy coder's bits, and its values back."""
  tables = rc.CdfTables([-8, 0, 100, 256, -4, 0, 3, 16])
  values = np.array([[0, 1, -5, 40, 1, 2]])
  with caplog.at_level("WARNING", logger=native.__name__):
    strings = native.encode_channel(values, tables)
  assert not native.available()
  (record,) = caplog.records
  assert "the numpy coder runs" in record.getMessage()
  assert "\n" not in record.getMessage()
  assert strings == rc.encode_channel(values, tables)
  np.testing.assert_array_equal(native.decode_channel(strings, tables, [6]),
                                values)
  return record.getMessage()


def test_a_planted_library_is_not_loaded(cache, caplog):
  """A library whose sha256 is not the one the build recorded never runs,
  not even its constructor."""
  path = native.library_path()
  marker = cache / "constructor_ran"
  plant(path, textwrap.dedent(f"""
      #include <stdio.h>
      __attribute__((constructor)) static void planted(void) {{
        fclose(fopen("{marker}", "w"));
      }}
  """), cache)
  with open(path + ".sha256", "w") as f:
    f.write("0" * 64)
  assert "sha256 differs" in assert_numpy_runs_alone(caplog)
  assert not marker.exists()


def test_a_library_others_may_write_is_not_loaded(cache, caplog):
  path = native.library_path()
  native._build(path)  # pylint: disable=protected-access
  os.chmod(path, 0o664)
  assert "writable by others (mode 664)" in assert_numpy_runs_alone(caplog)


def test_a_cache_dir_others_may_write_is_not_loaded(cache, caplog):
  path = native.library_path()
  native._build(path)  # pylint: disable=protected-access
  os.chmod(os.path.dirname(path), 0o777)
  assert "writable by others (mode 777)" in assert_numpy_runs_alone(caplog)


def test_a_library_without_the_functions_falls_back(cache, caplog):
  """A recorded library that lacks a C function: the numpy coder, not an
  AttributeError."""
  path = native.library_path()
  plant(path, "int rc_check_tables(void) { return 0; }\n", cache)
  with open(path + ".sha256", "w") as f:
    f.write(native._sha256(path))  # pylint: disable=protected-access
  assert "lacks rc_strerror" in assert_numpy_runs_alone(caplog)


def test_a_library_built_here_is_loaded(cache):
  assert native.available()
  path = native.library_path()
  assert path.startswith(str(cache))
  mode = os.stat(os.path.dirname(path)).st_mode
  assert not mode & 0o077  # the cache dir is private
