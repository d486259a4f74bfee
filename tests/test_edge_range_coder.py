"""tfvaeclf.coding.range_coder must write exactly TFC 2.14.1's bytes.

Every test compares with the TFC ops themselves (tensorflow and
tensorflow_compression are imported here only; the module under test must
not need them).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from tfvaeclf.coding import range_coder as rc  # pylint: disable=g-import-not-at-top

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
tf = pytest.importorskip("tensorflow")
tfc = pytest.importorskip("tensorflow_compression")
from tensorflow_compression.python.ops import gen_ops  # pylint: disable=g-import-not-at-top


# ---------------------------------------------------------------------------
# TFC reference and table helpers
# ---------------------------------------------------------------------------
def tfc_encode(cdf, symbols, batch_ndim=1, index=None):
  """Raw TFC ops: symbols are table-relative (offsets already removed)."""
  symbols = np.asarray(symbols, np.int32)
  handle = gen_ops.create_range_encoder(symbols.shape[:batch_ndim],
                                        np.asarray(cdf, np.int32))
  if index is None:
    handle = gen_ops.entropy_encode_channel(handle, symbols)
  else:
    handle = gen_ops.entropy_encode_index(
        handle, np.asarray(index, np.int32), symbols)
  strings = gen_ops.entropy_encode_finalize(handle).numpy()
  return np.asarray(strings, dtype=object).ravel().tolist()


def tfc_decode(strings, cdf, shape, index=None):
  """Raw TFC decode of a list of strings: (symbols, sanity per string)."""
  strings = tf.constant(np.array(strings, dtype=object), tf.string)
  handle = gen_ops.create_range_decoder(strings, np.asarray(cdf, np.int32))
  if index is None:
    handle, symbols = gen_ops.entropy_decode_channel(
        handle, np.asarray(shape, np.int32), tf.int32)
  else:
    handle, symbols = gen_ops.entropy_decode_index(
        handle, np.asarray(index, np.int32), np.asarray(shape, np.int32),
        tf.int32)
  sanity = gen_ops.entropy_decode_finalize(handle)
  return symbols.numpy(), sanity.numpy()


def quantized_cdf(pmf, precision):
  return gen_ops.pmf_to_quantized_cdf(
      np.asarray(pmf, np.float32), precision=precision).numpy()


def random_lookup(rng, precision, num_tables, max_bins=40, overflow=True):
  """TFC-style flat lookup built with TFC's own pmf_to_quantized_cdf."""
  parts = []
  for _ in range(num_tables):
    # pmf_to_quantized_cdf needs 2 <= bins <= 2**precision.
    top = min(max_bins, 2 ** precision)
    bins = int(rng.integers(2, top + 1))
    pmf = rng.dirichlet(np.full(bins, rng.uniform(0.05, 3.0)))
    parts.append([-precision if overflow else precision])
    parts.append(quantized_cdf(pmf, precision))
  return np.concatenate(parts).astype(np.int32)


def random_symbols(rng, shape, tables, escape_rate=0.05, far=False):
  """Table-relative symbols: mostly in range, some escapes of both signs."""
  width = int(tables.num_symbols.max())
  sym = rng.integers(0, width, size=shape)
  esc = rng.random(shape) < escape_rate
  big = 10 ** rng.integers(1, 9 if far else 4, size=shape)
  sym[esc] = (rng.choice([-1, 1], size=shape) * rng.integers(1, big + 1))[esc]
  return sym.astype(np.int64)


def truncations_and_flips(good, rng, flips):
  """Every truncation of the string `good`, and `flips` copies with one
  byte changed at random."""
  corrupt = [good[:k] for k in range(len(good))]
  for _ in range(flips):
    data = bytearray(good)
    data[rng.integers(len(data))] ^= int(rng.integers(1, 256))
    corrupt.append(bytes(data))
  return corrupt


# ---------------------------------------------------------------------------
# Byte equality with TFC
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("precision", range(rc.PRECISION_MIN,
                                             rc.PRECISION_MAX + 1))
def test_channel_matches_tfc_every_precision(precision):
  rng = np.random.default_rng(precision)
  for trial in range(4):
    num_tables = int(rng.integers(1, 6))
    lookup = random_lookup(rng, precision, num_tables)
    tables = rc.CdfTables(lookup)
    batch = (1, 3, 7, 70)[trial]        # 70 takes the lockstep path
    sym = random_symbols(rng, (batch, 5 * num_tables), tables)
    ours = rc.encode_channel(sym, tables)
    assert ours == tfc_encode(lookup, sym)
    np.testing.assert_array_equal(
        rc.decode_channel(ours, tables, sym.shape[1:]), sym)


@pytest.mark.parametrize("precision", [1, 5, 8, 12, 16])
def test_index_matches_tfc(precision):
  rng = np.random.default_rng(100 + precision)
  for batch in (1, 4, 65):
    lookup = random_lookup(rng, precision, 6)
    tables = rc.CdfTables(lookup)
    sym = random_symbols(rng, (batch, 40), tables)
    index = rng.integers(0, 6, size=sym.shape)
    ours = rc.encode_index(sym, index, tables)
    assert ours == tfc_encode(lookup, sym, index=index)
    np.testing.assert_array_equal(rc.decode_index(ours, index, tables), sym)


def test_escapes_far_outside_both_signs():
  rng = np.random.default_rng(7)
  lookup = random_lookup(rng, 12, 4)
  tables = rc.CdfTables(lookup)
  escape = tables.num_symbols - 1
  limit = 2 ** 30 - 1      # largest gamma TFC terminates on
  row = np.array([
      -1, -2, -3, -limit, -(limit - 1), -12345678,
      escape[0], escape[1] + 1, escape[2] + 2, escape.min() + limit - 1,
      0, 1, 255, 256, 65535, 65536, 2 ** 20, -2 ** 20, 10 ** 9, -10 ** 9,
  ])
  sym = np.stack([row, row[::-1], np.roll(row, 3)])
  ours = rc.encode_channel(sym, tables)
  assert ours == tfc_encode(lookup, sym)
  np.testing.assert_array_equal(
      rc.decode_channel(ours, tables, sym.shape[1:]), sym)
  # Same through the lockstep coder.
  many = np.tile(sym, (30, 1))
  assert rc.encode_channel(many, tables) == tfc_encode(lookup, many)


def test_gamma_beyond_tfc_limit_raises():
  tables = rc.CdfTables([-4, 0, 8, 16])          # escape bin is 1
  ok = [[2 ** 30 - 1], [-(2 ** 30 - 1)]]         # gamma = 2**30 - 1
  assert rc.encode_channel(ok, tables) == tfc_encode(tables.flat, ok)
  for bad in (2 ** 30, -(2 ** 30), 2 ** 31 - 1):
    with pytest.raises(ValueError, match="2\\*\\*30"):
      rc.encode_channel([[bad]], tables)


def test_empty_streams():
  rng = np.random.default_rng(1)
  lookup = random_lookup(rng, 12, 3)
  tables = rc.CdfTables(lookup)
  for batch in (1, 5, 80):
    sym = np.zeros((batch, 0), np.int64)
    ours = rc.encode_channel(sym, tables)
    assert ours == tfc_encode(lookup, sym) == [b""] * batch
    assert rc.decode_channel(ours, tables, [0]).shape == (batch, 0)
    assert rc.encode_index(sym, sym, tables) == [b""] * batch
  assert rc.encode_channel(np.zeros((0, 4), np.int64), tables) == []


def test_long_streams():
  rng = np.random.default_rng(2)
  for precision in (12, 16):
    lookup = random_lookup(rng, precision, 16, max_bins=300)
    tables = rc.CdfTables(lookup)
    sym = random_symbols(rng, (2, 10000), tables, escape_rate=0.01, far=True)
    ours = rc.encode_channel(sym, tables)
    assert ours == tfc_encode(lookup, sym)
    np.testing.assert_array_equal(
        rc.decode_channel(ours, tables, [10000]), sym)
  index = rng.integers(0, 16, size=sym.shape)
  assert rc.encode_index(sym, index, tables) == tfc_encode(
      lookup, sym, index=index)


def test_lockstep_and_per_stream_agree(monkeypatch):
  rng = np.random.default_rng(3)
  lookup = random_lookup(rng, 16, 8, max_bins=200)
  tables = rc.CdfTables(lookup)
  # Skewed tables make long runs of carries and pending digits likely.
  skew = rc.CdfTables.from_cdfs(
      [[0, 1, 2, 65536], [0, 65534, 65535, 65536]], 16)
  for tabs, look in ((tables, lookup), (skew, skew.flat)):
    sym = random_symbols(rng, (12, 300), tabs, escape_rate=0.02, far=True)
    sym[:6] = np.clip(sym[:6], 0, int(tabs.num_symbols.min()) - 2)
    ref = tfc_encode(look, sym)
    for threshold in (1, 10 ** 6):
      monkeypatch.setattr(rc, "LOCKSTEP_MIN_BATCH", threshold)
      assert rc.encode_channel(sym, tabs) == ref
      index = np.broadcast_to(np.arange(300) % tabs.num_tables, sym.shape)
      assert rc.encode_index(sym, index, tabs) == ref


def test_batch_axes_and_coding_rank():
  rng = np.random.default_rng(4)
  lookup = random_lookup(rng, 10, 4)
  tables = rc.CdfTables(lookup)
  sym = random_symbols(rng, (2, 3, 5, 4), tables)
  # coding_rank=2: handle shape (2, 3), one string per (i, j).
  ours = rc.encode_channel(sym, tables, coding_rank=2)
  assert ours == tfc_encode(lookup, sym, batch_ndim=2)
  back = rc.decode_channel(ours, tables, (5, 4))
  np.testing.assert_array_equal(back.reshape(sym.shape), sym)
  # coding_rank=4: a single stream for everything (handle shape []).
  assert rc.encode_channel(sym, tables, coding_rank=4) == tfc_encode(
      lookup, sym, batch_ndim=0)


def test_channel_count_not_dividing_stream():
  # The kernel cycles tables over the flattened stream (k % num_tables).
  rng = np.random.default_rng(5)
  lookup = random_lookup(rng, 8, 3)
  tables = rc.CdfTables(lookup)
  sym = random_symbols(rng, (4, 2, 7), tables)
  assert rc.encode_channel(sym, tables, coding_rank=2) == tfc_encode(
      lookup, sym)
  np.testing.assert_array_equal(
      rc.decode_channel(rc.encode_channel(sym, tables, coding_rank=2),
                        tables, (2, 7)), sym)


def test_hand_made_tables_padding_matrix_and_plain():
  # Trailing zero-probability bins are padding: the escape becomes bin 1.
  padded = np.array([-8, 0, 100, 256, 256, 256, -3, 0, 1, 7, 8, 8],
                    np.int32)
  tables = rc.CdfTables(padded)
  assert tables.num_symbols.tolist() == [2, 3]
  sym = np.array([[0, 0, 1, 2, -1, 5, 3, -7, 2, 1, 0, 40]])
  assert rc.encode_channel(sym, tables) == tfc_encode(padded, sym)
  # A 2-D lookup (one table per row, padded with the last value).
  matrix = np.array([[-12, 0, 1000, 4096, 4096, 4096],
                     [-12, 0, 2000, 3000, 4000, 4096],
                     [12, 0, 10, 20, 4096, 4096]], np.int32)
  tables = rc.CdfTables(matrix)
  sym = np.array([[0, 3, 2, 1, -4, 0, 7, 2, 1]] * 3)
  assert rc.encode_channel(sym, tables) == tfc_encode(matrix, sym)
  np.testing.assert_array_equal(
      rc.decode_channel(rc.encode_channel(sym, tables), tables, [9]), sym)
  # Positive precision: no escapes; out-of-range values are errors in both.
  plain = np.array([5, 0, 3, 20, 32, 16, 0, 60000, 65535, 65536], np.int32)
  tables = rc.CdfTables(plain)
  sym = np.array([[0, 2, 1, 0, 2, 1], [2, 0, 0, 2, 2, 2]])
  assert rc.encode_channel(sym, tables) == tfc_encode(plain, sym)
  np.testing.assert_array_equal(
      rc.decode_channel(rc.encode_channel(sym, tables), tables, [6]), sym)
  for bad in (3, -1):
    with pytest.raises(tf.errors.InvalidArgumentError):
      tfc_encode(plain, [[bad, 0]])
    with pytest.raises(ValueError, match="not in range"):
      rc.encode_channel([[bad, 0]], tables)


def test_from_cdfs_matches_flat():
  rng = np.random.default_rng(6)
  cdfs = [quantized_cdf(rng.dirichlet(np.ones(k)), 11) for k in (3, 9, 30)]
  tables = rc.CdfTables.from_cdfs(cdfs, 11, offsets=[-1, -4, -15])
  flat = np.concatenate([np.r_[-11, c] for c in cdfs]).astype(np.int32)
  np.testing.assert_array_equal(tables.flat, flat)
  values = np.array([[0, 0, 0, -1, 4, 14, 5, -9, 100]])
  ours = rc.encode_channel(values, tables)
  assert ours == tfc_encode(flat, values - np.tile([-1, -4, -15], 3))
  np.testing.assert_array_equal(rc.decode_channel(ours, tables, [9]), values)


def test_zero_probability_symbol_raises():
  tables = rc.CdfTables([-8, 0, 100, 100, 200, 256])   # bin 1 is empty
  assert rc.encode_channel([[0, 2, 3, -1]], tables) == tfc_encode(
      tables.flat, [[0, 2, 3, -1]])
  with pytest.raises(ValueError, match="zero probability"):
    rc.encode_channel([[0, 1]], tables)


@pytest.mark.parametrize("lookup, message", [
    ([], "no table"),
    ([-8, 0], "prematurely"),
    ([0, 0, 1], "precision"),
    ([-17, 0, 131072], "precision"),
    ([17, 0, 131072], "precision"),
    ([-8, 1, 256], "start with 0"),
    ([-8, 0, 200, 100, 256], "decreases"),
    ([-8, 0, 100, 200], "does not reach"),
    ([-8, 0, 100, 256, -8, 0], "prematurely"),
    ([-8, 0, 100, 256, -8, 0, 50], "does not reach"),
    ([-4, 0, 8, 16, -4, 0, 20, 16], "decreases"),
])
def test_malformed_tables_rejected_like_tfc(lookup, message):
  with pytest.raises(ValueError, match=message):
    rc.CdfTables(np.array(lookup, np.int32))
  if lookup:    # TFC refuses the same tables (an empty lookup is not built).
    with pytest.raises(tf.errors.InvalidArgumentError):
      tfc_encode(np.array(lookup, np.int32), np.zeros((1, 1), np.int32))


def test_malformed_arguments():
  tables = rc.CdfTables.from_cdfs([[0, 10, 256], [0, 128, 256]], 8)
  with pytest.raises(ValueError, match="cdf_offset"):
    rc.CdfTables(tables.flat, [1, 2, 3])
  with pytest.raises(ValueError, match="index"):
    rc.encode_index([[0, 1]], [[0, 2]], tables)
  with pytest.raises(ValueError, match="index"):
    rc.decode_index([b""], [[0, -1]], tables)
  with pytest.raises(ValueError, match="shape"):
    rc.encode_index([[0, 1]], [[0]], tables)
  with pytest.raises(TypeError, match="integer"):
    rc.encode_channel(np.zeros((1, 2), np.float32), tables)
  with pytest.raises(ValueError, match="coding_rank"):
    rc.encode_channel(np.zeros((1, 2), np.int32), tables, coding_rank=3)
  with pytest.raises(ValueError, match="2-D"):
    rc.CdfTables(np.zeros((1, 1, 3), np.int32))
  with pytest.raises(ValueError, match="more than one table"):
    rc.CdfTables(np.array([[-8, 0, 256, -8, 0, 256]], np.int32))
  with pytest.raises(TypeError, match="fixed-width"):
    rc.decode_channel(np.array([b"ab"]), tables, [2])


# ---------------------------------------------------------------------------
# Decoding: TFC <-> numpy, corrupt strings
# ---------------------------------------------------------------------------
def test_cross_decoding():
  rng = np.random.default_rng(8)
  lookup = random_lookup(rng, 14, 5, max_bins=100)
  tables = rc.CdfTables(lookup)
  sym = random_symbols(rng, (6, 55), tables, far=True)
  index = rng.integers(0, 5, size=sym.shape)
  for idx in (None, index):
    tfc_strings = tfc_encode(lookup, sym, index=idx)
    if idx is None:
      ours = rc.decode_channel(tfc_strings, tables, [55])
      theirs, sanity = tfc_decode(rc.encode_channel(sym, tables), lookup,
                                  [55])
    else:
      ours = rc.decode_index(tfc_strings, idx, tables)
      theirs, sanity = tfc_decode(rc.encode_index(sym, idx, tables), lookup,
                                  [55], index=idx)
    np.testing.assert_array_equal(ours, sym)
    np.testing.assert_array_equal(theirs, sym)
    assert sanity.all()


def test_corrupt_strings():
  rng = np.random.default_rng(9)
  lookup = random_lookup(rng, 12, 4)
  tables = rc.CdfTables(lookup)
  sym = random_symbols(rng, (1, 64), tables, escape_rate=0.03)
  (good,) = rc.encode_channel(sym, tables)
  # Bytes the decoder never reaches are always caught (it must consume
  # every byte); a byte it does read may pass, in TFC as here.
  for extra in (b"\0", b"\x01", b"\x01\x02", b"\0" * 3, b"\xff" * 7):
    _, ok = rc.decode_channel([good + extra], tables, [64], check=False)
    np.testing.assert_array_equal(
        ok, tfc_decode([good + extra], lookup, [64])[1])
  with pytest.raises(ValueError, match="sanity check"):
    rc.decode_channel([good + b"\xff" * 7], tables, [64])
  with pytest.raises(ValueError, match="sanity check"):
    rc.decode_channel([good, good + b"\x07"], tables, [64])
  # Shape mismatch: far fewer symbols than were coded.
  with pytest.raises(ValueError, match="sanity check"):
    rc.decode_channel([good], tables, [8])
  # Truncations and byte flips: same verdict and symbols as TFC's decoder.
  corrupt = truncations_and_flips(good, rng, 60)
  caught = 0
  for data in corrupt:
    try:
      ours, ok = rc.decode_channel([data], tables, [64], check=False)
    except ValueError:
      caught += 1       # escape longer than TFC can write: TFC would hang
      continue
    theirs, sanity = tfc_decode([data], lookup, [64])
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ok, sanity)
    if not ok.all():
      caught += 1
      with pytest.raises(ValueError):
        rc.decode_channel([data], tables, [64])
  assert caught > len(corrupt) // 3


def test_endless_escape_raises():
  # An empty string decodes to endless zero bits: TFC's decoder never
  # returns for a table whose only bin is the escape; ours refuses.
  with pytest.raises(ValueError, match="escape code"):
    rc.decode_channel([b""], rc.CdfTables([-4, 0, 16]), [1])


# ---------------------------------------------------------------------------
# Real entropy models
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def models():
  """Two real models on one NoisyDeepFactorized prior with 16 channels.

  The first is the TFC default (coding_rank=1, precision 12, offset
  heuristic); the second is set up like tfvaeclf.coders.FactorizedCoder
  (coding_rank=3, precision 16, no offset heuristic). Tail estimation is an
  eager loop of several seconds; both models share the prior, so its result
  is computed once (the tables are exactly what TFC builds).
  """
  from tensorflow_compression.python.distributions import helpers  # pylint: disable=g-import-not-at-top
  tf.random.set_seed(0)
  prior = tfc.NoisyDeepFactorized(batch_shape=[16])
  cache = {}

  def memo(fn):
    def wrapped(dist, tail_mass):
      key = (fn.__name__, id(dist), float(tail_mass))
      if key not in cache:
        cache[key] = fn(dist, tail_mass)
      return cache[key]
    return wrapped

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(helpers, "lower_tail", memo(helpers.lower_tail))
    patch.setattr(helpers, "upper_tail", memo(helpers.upper_tail))
    default = tfc.ContinuousBatchedEntropyModel(prior, coding_rank=1,
                                                compression=True)
    project = tfc.ContinuousBatchedEntropyModel(
        prior, coding_rank=3, compression=True, range_coder_precision=16,
        offset_heuristic=False)
  return default, project


@pytest.mark.slow
def test_batched_model_compress(models):
  model = models[0]
  tables = rc.CdfTables(model.cdf.numpy(), model.cdf_offset.numpy())
  assert model.range_coder_precision == 12
  rng = np.random.default_rng(10)
  x = (rng.normal(size=(5, 16)) * rng.uniform(0.5, 8)).astype(np.float32)
  x[0, :4] = [3e4, -3e4, 1e6, -1e6]                 # escapes
  x[1, 3] = 0.5                                     # ties round to even
  x[2] = 0
  values = rc.quantize(x, model.quantization_offset.numpy())
  ours = rc.encode_channel(values, tables)
  assert ours == model.compress(x).numpy().tolist()
  # TFC decodes our strings; ours decodes them back to the same integers.
  np.testing.assert_array_equal(
      model.decompress(ours, []).numpy(),
      values.astype(np.float32) + model.quantization_offset.numpy())
  np.testing.assert_array_equal(rc.decode_channel(ours, tables, [16]),
                                values)


@pytest.mark.slow
def test_project_style_model_rank3_precision16(models):
  # As tfvaeclf.coders.FactorizedCoder: coding_rank=3, precision 16,
  # no offset heuristic, one table per channel of a (B, H, W, C) latent.
  model = models[1]
  assert model.quantization_offset is None
  assert model.range_coder_precision == 16
  tables = rc.CdfTables(model.cdf.numpy(), model.cdf_offset.numpy())
  rng = np.random.default_rng(11)
  latent = (rng.normal(size=(3, 4, 4, 16)) * 6).astype(np.float32)
  latent[1, 0, 0, :4] = [-5e3, 5e3, 2e5, -2e5]
  values = rc.quantize(latent)
  ours = rc.encode_channel(values, tables, coding_rank=3)
  assert ours == model.compress(latent).numpy().tolist()
  np.testing.assert_array_equal(model.decompress(ours, [4, 4]).numpy(),
                                values)
  np.testing.assert_array_equal(
      rc.decode_channel(ours, tables, (4, 4, 16)), values)
  # Tables rebuilt from the saved arrays alone, as load_tables() does.
  loaded = tfc.ContinuousBatchedEntropyModel(
      prior_shape=[16], coding_rank=3, compression=True,
      offset_heuristic=False, cdf=model.cdf, cdf_offset=model.cdf_offset)
  np.testing.assert_array_equal(loaded.decompress(ours, [4, 4]).numpy(),
                                values)


def test_indexed_model_compress():
  model = tfc.LocationScaleIndexedEntropyModel(
      tfc.NoisyNormal, 10, lambda i: tf.exp(i / 3 - 1), coding_rank=1,
      compression=True, range_coder_precision=14)
  tables = rc.CdfTables(model.cdf.numpy(), model.cdf_offset.numpy())
  rng = np.random.default_rng(12)
  x = (rng.normal(size=(4, 30)) * 5).astype(np.float32)
  x[0, :2] = [1e5, -1e5]
  loc = rng.normal(size=x.shape).astype(np.float32)
  scale_index = rng.integers(0, 10, size=x.shape)
  values = rc.quantize(x, loc)
  ours = rc.encode_index(values, scale_index, tables)
  expected = model.compress(x, scale_index.astype(np.float32), loc)
  assert ours == expected.numpy().tolist()
  np.testing.assert_array_equal(
      rc.decode_index(ours, scale_index, tables), values)


# ---------------------------------------------------------------------------
# Packaging
# ---------------------------------------------------------------------------
def test_edge_and_coding_do_not_import_tensorflow():
  code = ("import sys, tfvaeclf.edge, tfvaeclf.coding as c; "
          "import tfvaeclf.coding.streams, tfvaeclf.coding.latent_decoder; "
          "c.encode_channel([[0]], c.CdfTables([-8, 0, 256])); "
          "bad = [m for m in sys.modules if m.startswith('tensorflow')]; "
          "assert not bad, bad")
  subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                 env=dict(os.environ, PYTHONPATH=ROOT), timeout=60)


def test_escape_work_is_bounded_by_the_strings_length(monkeypatch):
  """Strings of escapes alone are refused in one line once their escapes
  need more than `ESCAPE_STEPS_PER_BYTE` steps a byte: the steps are
  counted (each 1-bit decision, plus the escaped value's own), not timed."""
  tables = rc.CdfTables([-16, 0, 1, 65536])  # an escape bin of no bits
  escapes = []
  decode_escape = rc._decode_escape  # pylint: disable=protected-access

  def counted(*args):
    escapes.append(args)
    return decode_escape(*args)

  monkeypatch.setattr(rc, "_decode_escape", counted)
  most = 2 * (2 * 30 + 2 + 3)  # the allowance: two longest escapes
  for g in (1, 3, 2 ** 10, 2 ** 30 - 2):
    (string,) = rc.encode_channel(np.full((1, 2000), g), tables)
    escapes.clear()
    with pytest.raises(ValueError, match="escape codes need more") as e:
      rc.decode_channel([string], tables, [2000])
    assert "\n" not in str(e.value)
    decisions = 2 * g.bit_length()
    steps = len(escapes) * (decisions + 3)
    assert steps <= (rc.ESCAPE_STEPS_PER_BYTE * len(string) + most +
                     decisions + 3), (g, steps, len(string))
    assert len(escapes) < 2000
  # A string whose escapes take fewer steps a byte decodes whole.
  values = np.tile([0, 0, 2 ** 10], (1, 600))
  (string,) = rc.encode_channel(values, rc.CdfTables([-16, 0, 64, 65536]))
  np.testing.assert_array_equal(
      rc.decode_channel([string], rc.CdfTables([-16, 0, 64, 65536]),
                        [1800]), values)
