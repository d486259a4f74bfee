"""The integer slice predictor: C and numpy give the same tables for any
inputs, the Keras coder that trains it gives them too, its arrays
round-trip and refuse in one line, and decoding strings from outside
through it is bounded."""

import time

import numpy as np
import pytest

from tfvaeclf.coding import int_layers, native, slice_predictor
from tfvaeclf.coding.slice_predictor import IntegerSlicePredictor


def _random_layer(rng, in_channels, out_channels, kernel, *, stride=1,
                  transpose=False, low=-128, high=127):
  return {"kernel": rng.integers(-128, 128, (kernel, kernel, in_channels,
                                             out_channels)).astype(np.int8),
          "bias": rng.integers(-2**16, 2**16, out_channels).astype(np.int32),
          "divisor": rng.integers(1, int_layers.MAX_DIVISOR + 1,
                                  out_channels).astype(np.int32),
          "stride": stride, "transpose": transpose, "low": low, "high": high}


def _random_predictor(rng, **kwargs):
  """Random integer layers in the predictor's shapes: a transposed stride-2
  hyper layer (ReLU) and a 3x3 one, then per slice a 3x3 (ReLU) and a 1x1
  to 2 x size clipped as locations."""
  hyper_channels = int(rng.integers(1, 5))
  channels = int(rng.integers(1, 9))
  num_slices = int(rng.integers(1, channels + 1))
  sizes = [len(s) for s in np.array_split(np.arange(channels), num_slices)]
  hyper = [_random_layer(rng, hyper_channels, channels, 3, stride=2,
                         transpose=True, low=0),
           _random_layer(rng, channels, channels, 3)]
  slices = [[_random_layer(rng, channels + sum(sizes[:k]), channels, 3,
                           low=0),
             _random_layer(rng, channels, 2 * size, 1,
                           low=slice_predictor.LOC_LIMITS[0],
                           high=slice_predictor.LOC_LIMITS[1])]
            for k, size in enumerate(sizes)]
  return IntegerSlicePredictor(hyper, slices, sizes,
                               int(rng.integers(1, 65)), **kwargs)


def _decoded_values(rng, shape):
  """What a decoder feeds back: symbols + loc_q / 64, from the small ones
  of real latents to the int32 extremes a hostile string decodes to."""
  symbols = np.where(rng.random(shape) < 0.9,
                     rng.integers(-200, 200, shape),
                     rng.integers(-2**31, 2**31, shape))
  loc_q = rng.integers(*slice_predictor.LOC_LIMITS, shape, endpoint=True)
  return (symbols.astype(np.float32)
          + loc_q.astype(np.float32) / np.float32(slice_predictor.LOC_UNITS))


def test_c_and_numpy_predict_the_same_tables():
  """A property test over 300 random predictors and inputs (hyper-latents
  up to the int32 extremes, decoded values as a decoder feeds them): the
  features, locations and indexes are bit-equal in C and numpy, and within
  their ranges."""
  rng = np.random.default_rng(0)
  for trial in range(300):
    seed = int(rng.integers(2**31))
    c_runtime = _random_predictor(np.random.default_rng(seed))
    numpy_runtime = _random_predictor(np.random.default_rng(seed),
                                      native_layers=False)
    batch, rows, cols = (int(v) for v in rng.integers(1, 5, 3))
    z_rows, z_cols = -(-rows // 2), -(-cols // 2)
    z_hat = np.where(rng.random((batch, z_rows, z_cols, 1)) < 0.9,
                     rng.integers(-20, 20, (batch, z_rows, z_cols,
                                            c_runtime.hyper[0]["kernel"]
                                            .shape[2])),
                     rng.integers(-2**31, 2**31, (batch, z_rows, z_cols, 1)))
    features = [p.features(z_hat, (rows, cols))
                for p in (c_runtime, numpy_runtime)]
    np.testing.assert_array_equal(*features, err_msg=f"trial {trial}")
    decoded = []
    for k, size in enumerate(c_runtime.slice_sizes):
      (loc_c, index_c), (loc_n, index_n) = (
          p.predict(k, features[0], decoded)
          for p in (c_runtime, numpy_runtime))
      np.testing.assert_array_equal(loc_c, loc_n, err_msg=f"trial {trial}")
      np.testing.assert_array_equal(index_c, index_n,
                                    err_msg=f"trial {trial}")
      assert loc_c.shape == index_c.shape == (batch, rows, cols, size)
      assert slice_predictor.LOC_LIMITS[0] <= loc_c.min()
      assert loc_c.max() <= slice_predictor.LOC_LIMITS[1]
      assert 0 <= index_c.min() and index_c.max() < c_runtime.num_scales
      decoded.append(_decoded_values(rng, loc_c.shape))


def _units(rng, shape):
  """Latents in 1/65536 as the board makes them: small ones on a grid
  that puts ties on the locations' 1/64 grid, up to the limit."""
  limit = slice_predictor.LATENT_LIMIT
  return np.where(rng.random(shape) < 0.9,
                  rng.integers(-40 * 128, 40 * 128, shape) * 512,
                  rng.integers(1 - limit, limit, shape)).astype(np.int32)


def test_the_c_slice_loop_is_the_numpy_loop():
  """Property test, 200 random predictors: the slice loop a
  microcontroller runs (csrc/slice_predictor.c, image by image, in its own
  scratch) codes the same symbols and picks the same tables as the numpy
  loop the board runs, for hyper-latents up to the int32 extremes and
  latents up to the limit."""
  rng = np.random.default_rng(10)
  for trial in range(200):
    predictor = _random_predictor(np.random.default_rng(trial))
    batch, rows, cols = (int(v) for v in rng.integers(1, 5, 3))
    z_shape = (batch, -(-rows // 2), -(-cols // 2),
               predictor.hyper[0]["kernel"].shape[2])
    z_hat = np.where(rng.random(z_shape) < 0.9,
                     rng.integers(-20, 20, z_shape),
                     rng.integers(-2**31, 2**31, z_shape))
    units = _units(rng, (batch, rows, cols, sum(predictor.slice_sizes)))
    c_loop = native.slice_quantize(predictor, z_hat, units)
    numpy_loop = predictor.quantize(z_hat, units)
    for c, n in zip(c_loop, numpy_loop):
      np.testing.assert_array_equal(c, n, err_msg=f"trial {trial}")
      assert c.shape == (batch, units[0].size)


def test_the_board_rounds_half_up_in_integers():
  """`symbols` is round(y - loc_q / 64) with halves up, exactly (float64
  holds every value here); the latent's units round half to even and
  clip inside the limit."""
  rng = np.random.default_rng(11)
  units = _units(rng, 100_000)
  loc_q = rng.integers(*slice_predictor.LOC_LIMITS, 100_000, endpoint=True)
  exact = np.floor(units / 65536. - loc_q / 64. + .5)
  np.testing.assert_array_equal(slice_predictor.symbols(units, loc_q), exact)
  assert np.sum(np.mod(units / 65536. - loc_q / 64., 1.) == .5) > 300
  np.testing.assert_array_equal(
      slice_predictor.latent_units([1.5 / 65536, 2.5 / 65536, -1e12, 1e12,
                                    np.nan]),
      [2, 2, 1 - 2**30, 2**30 - 1, 0])


def test_the_c_slice_loop_refuses_in_one_line():
  """A latent beyond the limit, and a latent larger than the hyper-latent
  predicts: ValueError in one line from both loops, nothing coded."""
  predictor = _random_predictor(np.random.default_rng(12))
  channels = sum(predictor.slice_sizes)
  z_hat = np.zeros((1, 1, 1, predictor.hyper[0]["kernel"].shape[2]))
  for units, needle in (
      (np.full((1, 2, 2, channels), 2**30), "LATENT_LIMIT|outside"),
      (np.zeros((1, 3, 2, channels)), "cannot predict|a size")):
    for loop in (native.slice_quantize,
                 lambda p, z, u: p.quantize(z, u)):
      with pytest.raises(ValueError, match=needle) as excinfo:
        loop(predictor, z_hat, units)
      assert "\n" not in str(excinfo.value)


def test_decoded_values_round_half_up_into_int8_in_quarters():
  values = np.array([-1000.5, -32.125, -0.625, -0.125, -0.0625, 0.0625,
                     0.125, 0.625, 31.625, 31.875, np.inf, -np.inf, np.nan],
                    np.float32)
  np.testing.assert_array_equal(
      slice_predictor.to_inputs(values),
      [-128, -128, -2, 0, 0, 0, 1, 3, 127, 127, 127, -128, 0])


def test_arrays_round_trip_and_refuse_in_one_line():
  predictor = _random_predictor(np.random.default_rng(3))
  arrays = predictor.arrays("latent/predictor")
  again = IntegerSlicePredictor.from_arrays(arrays, "latent/predictor")
  assert again.arrays("latent/predictor").keys() == arrays.keys()
  for name, array in again.arrays("latent/predictor").items():
    np.testing.assert_array_equal(array, arrays[name])
    assert array.dtype == arrays[name].dtype
  last = f"latent/predictor/slice_{len(predictor.slices) - 1}/1"
  broken = {
      "a missing divisor": ({f"{last}/divisor": None}, "lacks"),
      "a float kernel": ({f"{last}/kernel": arrays[f"{last}/kernel"]
                          .astype(np.float32)}, "int8 kernels"),
      "a zero divisor": ({f"{last}/divisor": np.zeros_like(
          arrays[f"{last}/divisor"])}, "a divisor outside"),
      "an unclipped last layer": ({f"{last}/config": np.array(
          [1, 0, -128, 127], np.int32)}, "not clipped"),
      "a slice too many": ({"latent/predictor/slice_sizes": np.array(
          [*predictor.slice_sizes, 1], np.int32)}, "without its size"),
      "no sizes": ({"latent/predictor/slice_sizes": None}, "slice_sizes"),
  }
  for case, (changes, needle) in broken.items():
    changed = {**arrays, **changes}
    changed = {k: v for k, v in changed.items() if v is not None}
    with pytest.raises(ValueError) as excinfo:
      IntegerSlicePredictor.from_arrays(changed, "latent/predictor")
    message = str(excinfo.value)
    assert "\n" not in message and needle in message, (case, message)


def test_figures_count_what_a_board_stores_and_computes():
  """A 2-slice predictor counted by hand: on a 4x4 latent (a 2x2
  hyper-latent), 2,216 multiply-accumulates, 176 parameters, 356 bytes
  of arrays, 448 bytes of int32 activations."""
  rng = np.random.default_rng(8)
  hyper = [_random_layer(rng, 1, 2, 3, stride=2, transpose=True, low=0),
           _random_layer(rng, 2, 2, 3)]
  slices = [[_random_layer(rng, 2 + k, 2, 3, low=0),
             _random_layer(rng, 2, 2, 1, low=slice_predictor.LOC_LIMITS[0],
                           high=slice_predictor.LOC_LIMITS[1])]
            for k in range(2)]
  figures = IntegerSlicePredictor(hyper, slices, [1, 1], 64).figures((4, 4))
  # macs: 4 x 18 (transposed, per input) + 16 x (36 + 36 + 4 + 54 + 4);
  # bytes: 152 taps, 12 x 8 bias and divisor, 6 x 16 config, 12 sizes.
  assert figures == {"dtype": "int8", "bytes": 356, "parameters": 176,
                     "macs": 2216, "activation_bytes": 448}


@pytest.fixture(scope="module")
def frozen_coder():
  """An integer_context coder (8 channels, 4 slices) with random integer
  weights far from their starting values, frozen."""
  import tensorflow as tf
  from tfvaeclf.coders import IntegerContextCoder
  coder = IntegerContextCoder(8, num_slices=4)
  coder(tf.zeros([1, 4, 4, 8]))
  rng = np.random.default_rng(5)
  for variable in coder.hyper_synthesis.weights + [
      w for t in coder.slice_transforms for w in t.weights]:
    name = variable.name.split("/")[-1]
    if name.startswith("kernel"):
      value = rng.uniform(-1., 127. / 128., variable.shape)
    elif name.startswith("bias"):
      value = rng.uniform(-50., 50., variable.shape)
    else:  # log_divisor
      value = rng.uniform(np.log(8.), np.log(4000.), variable.shape)
    variable.assign(value.astype(np.float32))
  coder.freeze()
  return coder


def test_keras_coder_picks_the_predictors_tables(frozen_coder):
  """The Keras layers (float32 on integers) and the integer predictor (C,
  numpy) give the same values and table indexes for 64 latents, whose
  values include halves away from the locations' 1/64 grid."""
  import tensorflow as tf
  rng = np.random.default_rng(6)
  latent = (rng.integers(-40 * 128, 40 * 128, (64, 4, 4, 8)) / 128.).astype(
      np.float32)
  z_hat = np.round(frozen_coder.hyper_analysis(latent).numpy())
  symbols, indexes = frozen_coder.slice_symbols(tf.constant(latent),
                                                tf.constant(z_hat))
  _, stream = frozen_coder.stream_plan([4, 4])
  for native_layers in (True, False):
    stream.predictor = frozen_coder.predictor(native_layers=native_layers)
    values, board_indexes = stream.quantize(latent, coded={"hyper": z_hat})
    np.testing.assert_array_equal(values, symbols.numpy())
    np.testing.assert_array_equal(board_indexes, indexes.numpy())
  assert len(np.unique(indexes)) > 5  # the weights pick many tables


def test_strings_from_outside_decode_in_bounded_time(frozen_coder):
  """Fuzz: 2,000 random latent strings (0-64 bytes) behind hyper-latents
  with values up to the int32 extremes: every image decodes or fails
  alone with a one-line reason, to finite values, in bounded time (the
  predictor's work is fixed by the shapes, the range decoder's by the
  string)."""
  _, stream = frozen_coder.stream_plan([4, 4])
  rng = np.random.default_rng(7)
  slowest = 0.
  for _ in range(20):
    strings = [rng.bytes(int(rng.integers(0, 65))) for _ in range(100)]
    z_hat = np.where(rng.random((100, 2, 2, 4)) < 0.9,
                     rng.integers(-30, 30, (100, 2, 2, 4)),
                     rng.integers(-2**31, 2**31, (100, 2, 2, 4)))
    start = time.perf_counter()
    values, failures = stream.decode(strings, {"hyper": z_hat.astype(
        np.float32)})
    slowest = max(slowest, time.perf_counter() - start)
    assert values.shape == (100, 4, 4, 8) and np.isfinite(values).all()
    for failure in failures:
      assert failure is None or (failure[0] == "latent"
                                 and "\n" not in failure[1])
  assert sum(f is not None for f in failures) > 0
  assert slowest < 5.0, f"a batch of 100 took {slowest:.2f} s"


_SMALL = {"filters": (8, 16), "latent_channels": 8,
          "classifier_units": (32,), "lmbda": 1.0}


def _second_stage(mnist, directory, source):
  """One epoch of an integer_context model on `source`'s frozen encoder
  and hyper-latent; its loaded model."""
  from tests.conftest import run_spec
  from tfvaeclf import model_dir, models, train
  config = models.get("joint").Config(**_SMALL,
                                      entropy_model="integer_context")
  train.run_training(run_spec(
      directory, "joint", config, epochs=1, batch_size=64,
      learning_rate=3e-3, seed=0, train_subset=2000,
      freeze_encoder_from=source), mnist, verbose=0)
  return model_dir.load(str(directory))


@pytest.fixture(scope="module")
def two_stages(mnist, tmp_path_factory):
  """A float context model (one epoch on 2,000 real digits) and an integer
  predictor trained on it: (float dir, integer dir)."""
  from tests.conftest import train_small_joint
  root = tmp_path_factory.mktemp("stages")
  float_dir = train_small_joint(root / "float", mnist, 2000, lmbda=1.0,
                                entropy_model="context")
  _second_stage(mnist, root / "integer", float_dir)
  return float_dir, str(root / "integer")


@pytest.mark.slow
def test_second_stage_keeps_the_float_models_encoder_and_hyper_latent(
    mnist, two_stages, tmp_path):
  """An integer predictor trained on a float context model's frozen
  encoder and hyper-latent (`--freeze_encoder_from`): both write the same
  hyper-latent strings for real digits, and the predictor has trained. A
  factorized source has no hyper-latent to give: one line."""
  import tensorflow as tf
  from tests.conftest import train_small_joint
  from tfvaeclf import codec, model_dir, models
  tf.keras.utils.set_random_seed(0)
  start = models.build("joint", models.get("joint").Config(
      **_SMALL, entropy_model="integer_context"))
  start.build_from_config()
  source, integer = (model_dir.load(d) for d in two_stages)
  for a, b in zip(integer.model.analysis.weights,
                  source.model.analysis.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  images = next(iter(mnist.test.batch(100)))[0].numpy()
  hyper = [loaded.codec.read(codec.compress_images(loaded, images)).strings[0]
           for loaded in (integer, source)]
  assert list(hyper[0]) == list(hyper[1])
  moved = [np.abs(a.numpy() - b.numpy()).max() for a, b in zip(
      integer.model.coder.hyper_synthesis.weights,
      start.coder.hyper_synthesis.weights)]
  assert min(moved) > 0
  factorized_dir = train_small_joint(tmp_path / "factorized", mnist, 200)
  with pytest.raises(model_dir.ModelDirError) as excinfo:
    _second_stage(mnist, tmp_path / "wrong", factorized_dir)
  assert "\n" not in str(excinfo.value)
  assert "does not fit" in str(excinfo.value)


@pytest.mark.slow
def test_bench_predictor_counts_every_path(two_stages):
  """tools/bench_predictor.py on 300 real digits: the integer predictor's
  four paths agree (its target), and every float runtime gets a row."""
  import subprocess
  import sys
  float_dir, integer_dir = two_stages
  result = subprocess.run(
      [sys.executable, "tools/bench_predictor.py", f"--float_dir={float_dir}",
       f"--integer_dir={integer_dir}", "--num_images=300"],
      capture_output=True, text=True, check=False)
  out = result.stdout
  for path in ("C predictor (board)", "numpy twin", "server's decode"):
    assert f"| {path} | 38400 | 0 | 0 |" in out, out
  for runtime in ("XNNPACK", "BUILTIN_REF", "TFLM"):
    assert runtime in out
  assert "target 1, indexes equal on every path: met" in out
  assert "payload bytes per image: float context" in out
  assert result.returncode in (0, 1), result.stderr[-2000:]
