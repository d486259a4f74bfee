"""The coders: bit-exact round trips, tables, rate, end to end; `decode`
(the project's decoder) against `decompress` (TFC's ops)."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_compression as tfc
from tensorflow_compression.python.ops import gen_ops

from tfvaeclf import codec, coders, data, model_dir, models, train
from tfvaeclf.coding import bitstream, latent_decoder
from tests.conftest import SMALL_JOINT, run_spec

CONDITIONAL = ("hyperprior", "context")
CHANNELS = 8


def _latent(shape, seed=0, spread=6.):
  """A latent spanning many symbols, with a few far outliers (escapes)."""
  latent = tf.random.stateless_normal(
      (5, *shape, CHANNELS), seed=(seed, 2)) * spread
  return latent + tf.random.stateless_normal(
      latent.shape, seed=(seed, 3)) * 0.3


@pytest.fixture(scope="module", params=CONDITIONAL)
def frozen(request):
  """A coder with all layers built and its tables frozen (once per kind)."""
  coder = coders.build_coder(request.param, CHANNELS)
  coder(_latent((4, 4)))
  coder.freeze()
  return coder


def test_context_coder_slices_the_channels():
  assert coders.ChannelContextCoder(10, num_slices=4).slice_sizes == [
      3, 3, 2, 2]
  assert coders.HyperpriorCoder(10).slice_sizes == [10]
  with pytest.raises(ValueError, match="num_slices"):
    coders.ChannelContextCoder(4, num_slices=5)
  # --entropy_model=context on a latent of fewer than 4 channels.
  assert coders.build_coder("context", 2).slice_sizes == [1, 1]
  assert coders.build_coder("context", 10).slice_sizes == [3, 3, 2, 2]


@pytest.mark.parametrize("shape", [(4, 4), (7, 7), (3, 6)])
def test_decompress_returns_what_the_classifier_saw(frozen, shape):
  latent = _latent(shape)
  latent_hat, _ = frozen(latent, training=False)
  strings = frozen.compress(latent)
  assert len(strings) == len(frozen.stream_plan(shape)) == 2
  assert all(s.shape == (5,) for s in strings)
  decoded = frozen.decompress(strings, shape)
  np.testing.assert_array_equal(decoded.numpy(), latent_hat.numpy())
  assert np.any(decoded.numpy() != np.round(decoded.numpy()))  # mu is used


def _decode_without_tfc(coder, strings, shape, **options):
  """`coder.decode`, where TFC's decode ops fail if called."""
  def refuse(*args, **kwargs):
    raise AssertionError("TFC's range decoder was called")
  with pytest.MonkeyPatch.context() as patch:
    for module in (gen_ops, tfc):
      for name in ("create_range_decoder", "entropy_decode_channel",
                   "entropy_decode_index"):
        patch.setattr(module, name, refuse)
    return coder.decode(strings, shape, **options)


@pytest.mark.parametrize("shape", [(4, 4), (7, 7), (3, 6), (1, 1)])
def test_decode_equals_tfcs_decompress_bit_for_bit(frozen, shape):
  for seed in range(3):
    latent = _latent(shape, seed=seed, spread=3. * (seed + 1))
    strings = frozen.compress(latent)
    expected = frozen.decompress(strings, shape).numpy()
    decoded = _decode_without_tfc(frozen, [s.numpy() for s in strings],
                                  shape)
    assert decoded.dtype == tf.float32
    np.testing.assert_array_equal(decoded.numpy(), expected)


@pytest.mark.parametrize("coding_rank,shape", [(3, (5, 3)), (3, (1, 1)),
                                               (2, (6,))])
def test_factorized_decode_equals_tfcs_decompress(coding_rank, shape):
  coder = coders.FactorizedCoder(CHANNELS, coding_rank=coding_rank)
  latent = tf.random.stateless_normal((9, *shape, CHANNELS), (4, 5)) * 5
  coder(latent)
  coder.freeze()
  # Far outliers take the escape code.
  latent = latent.numpy()
  latent[0].flat[0], latent[3].flat[-1] = 1e4, -3e5
  strings = coder.compress(latent)
  expected = coder.decompress(strings, shape).numpy()
  assert np.abs(expected).max() == 3e5
  np.testing.assert_array_equal(
      _decode_without_tfc(coder, [s.numpy() for s in strings], shape).numpy(),
      expected)


def test_dithered_decode_equals_tfcs_decompress():
  coder = coders.DitheredCoder((2, 2, 5), 6, seed=7)
  latent = tf.random.stateless_uniform((30, 2, 2, 5), (6, 7), 0., 5.)
  coder(latent, training=True)
  coder.freeze()
  for seed in (None, 12345):
    strings = coder.compress(latent, seed=seed)
    expected = coder.decompress(strings, (2, 2), seed=seed).numpy()
    np.testing.assert_array_equal(
        _decode_without_tfc(coder, [s.numpy() for s in strings], (2, 2),
                            seed=seed).numpy(), expected)
  # Image i of a batch may take any dither index (a message's counter).
  (strings,) = coder.compress(latent)
  decoded = coder.decode([strings.numpy()[[7, 6]]], (2, 2),
                         dither_indices=[7, 6])
  np.testing.assert_array_equal(
      decoded.numpy(), coder(latent, training=False)[0].numpy()[[7, 6]])


def test_strings_that_do_not_decode_raise_one_line(frozen):
  latent = _latent((4, 4))
  strings = [s.numpy().tolist() for s in frozen.compress(latent)]
  for stream, name in enumerate(("hyper", "latent")):
    bad = [list(s) for s in strings]
    bad[stream][3] += b"\x07\x01\x02"  # bytes after the stream's end
    with pytest.raises(bitstream.BitstreamError,
                       match=f"the {name} string of image 3 is corrupt"):
      frozen.decode(bad, (4, 4))


def test_escapes_no_encoder_writes_raise_one_line():
  # Bin 0 of width 1, then the escape bin: the string's value 1 opens an
  # escape, and the zeros after it make an escape code longer than any
  # encoder writes (its decoding would loop on in TFC).
  tables = {"cdf": np.array([-16, 0, 1, 65536]), "cdf_offset": [0]}
  with pytest.raises(bitstream.BitstreamError,
                     match="payload does not decode: .*escape code"):
    latent_decoder.decode_factorized([b"\0\1" + bytes(40)], tables, (1,))


def test_hyper_latent_shape_is_half_the_latent_rounded_up(frozen):
  assert frozen.hyper_analysis(_latent((7, 4))).shape[1:3] == (4, 2)


def test_training_call_is_straight_through_and_noisy(frozen):
  latent = _latent((4, 4))
  with tf.GradientTape() as tape:
    tape.watch(latent)
    latent_hat, bits = frozen(latent, training=True)
    loss = tf.reduce_sum(latent_hat) + tf.reduce_sum(bits)
  grads = tape.gradient(loss, [latent, *frozen.trainable_variables])
  assert all(g is not None for g in grads)
  assert bits.shape == (5,)


def test_tables_reload_into_a_fresh_coder(frozen):
  latent = _latent((7, 7), seed=1)
  strings = frozen.compress(latent)
  tables = frozen.tables()
  assert set(tables) == {"hyper/cdf", "hyper/cdf_offset", "latent/cdf",
                         "latent/cdf_offset"}
  fresh = type(frozen)(CHANNELS)
  fresh(latent)
  for mine, theirs in zip(fresh.trainable_weights, frozen.trainable_weights):
    mine.assign(theirs)
  fresh.load_tables(tables)
  np.testing.assert_array_equal(fresh.decompress(strings, (7, 7)).numpy(),
                                frozen.decompress(strings, (7, 7)).numpy())
  for again, string in zip(fresh.compress(latent), strings):
    np.testing.assert_array_equal(again.numpy(), string.numpy())


def test_compress_and_decompress_trace_into_tf_functions(frozen):
  latent = _latent((5, 3))
  strings = tf.function(frozen.compress)(latent)
  decoded = tf.function(frozen.decompress)(strings, tf.constant([5, 3]))
  np.testing.assert_array_equal(decoded.numpy(),
                                frozen(latent, training=False)[0].numpy())


@pytest.mark.slow
def test_estimated_rate_tracks_actual_bytes():
  """With scales matched to the latent, coding costs its information."""
  coder = coders.ChannelContextCoder(CHANNELS, num_slices=2)
  latent = _latent((7, 7), seed=2, spread=4.)
  coder(latent)
  index = np.log(4. / .11) / (np.log(256. / .11) / 63)
  for transform in coder.slice_transforms:
    kernel, bias = transform.layers[-1].weights
    kernel.assign(tf.zeros_like(kernel))
    half = bias.shape[0] // 2
    bias.assign(np.r_[np.zeros(half), np.full(half, index)])
  coder.freeze()
  strings = coder.compress(latent)
  actual_bits = 8 * sum(tf.strings.length(s).numpy() for s in strings)
  _, estimated_bits = coder(latent, training=False)
  assert np.all(np.abs(actual_bits - estimated_bits.numpy()) < 8 * 4)


def test_coding_before_freezing_is_refused():
  with pytest.raises(RuntimeError, match="freeze"):
    coders.HyperpriorCoder(4).compress(tf.zeros((1, 2, 2, 4)))


def test_conditional_coders_need_2d_latents():
  with pytest.raises(ValueError, match="coding_rank 3"):
    coders.build_coder("context", 4, coding_rank=2)


@pytest.fixture(scope="module", params=CONDITIONAL)
def trained(request, mnist, tmp_path_factory):
  """A small joint model with this coder, one epoch on 500 MNIST digits."""
  directory = str(tmp_path_factory.mktemp(request.param))
  config = models.get("joint").Config(
      **{**SMALL_JOINT, "entropy_model": request.param})
  train.run_training(run_spec(
      directory, "joint", config, epochs=1, batch_size=64,
      learning_rate=3e-3, seed=0, train_subset=500), mnist, verbose=0)
  return model_dir.load(directory)


@pytest.mark.slow
def test_joint_model_round_trips_through_the_file(trained, mnist):
  images, _ = next(iter(mnist.test.batch(32)))
  images = images.numpy()
  file_bytes = codec.compress_images(trained, images)
  coded = trained.codec.unpack(file_bytes)
  assert len(coded.strings) == 2 and coded.num_images == 32
  outputs = trained.model(data.to_float(images), training=False)
  decoded = codec.decode_latent(trained, file_bytes).numpy()
  np.testing.assert_array_equal(decoded, outputs["latent_hat"].numpy())
  np.testing.assert_array_equal(decoded, trained.model.decompress(
      [tf.constant(s) for s in coded.strings], coded.latent_shape))
  np.testing.assert_array_equal(codec.classify_file(trained, file_bytes),
                                tf.argmax(outputs["logits"], -1).numpy())
  actual_bits = 8 * np.sum([[len(s) for s in stream]
                            for stream in coded.strings], axis=0)
  # Two strings, each within a few bytes of its information content.
  assert np.all(np.abs(actual_bits - outputs["bits"].numpy()) < 8 * 5)
