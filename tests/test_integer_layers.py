"""IntegerConv2D: its float32 forward pass is the integer runtimes'
integers, and it trains."""

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import integer_layers
from tfvaeclf.coding import int_layers, native


def _layer(rng, transpose, stride, channels=5, filters=4, kernel_size=3,
           low=-128, high=127):
  layer = integer_layers.IntegerConv2D(
      filters, kernel_size, stride, transpose, low=low, high=high)
  layer.build((None, 6, 7, channels))
  # Weights anywhere, as training leaves them: beyond the int8 range,
  # fractional, divisors of every size.
  layer.kernel.assign(rng.uniform(-1.5, 1.5, layer.kernel.shape))
  layer.bias.assign(rng.uniform(-300, 300, layer.bias.shape))
  layer.log_divisor.assign(rng.uniform(0, np.log(40000), filters))
  return layer


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_the_keras_layer_computes_the_runtimes_integers(transpose, stride):
  rng = np.random.default_rng(stride + 2 * transpose)
  for trial in range(20):
    layer = _layer(rng, transpose, stride, low=-300 * trial, high=127 * trial)
    inputs = rng.integers(-128, 128, (3, 6, 7, 5))
    got = layer(tf.constant(inputs, tf.float32)).numpy()
    weights = layer.integer_weights()
    assert weights["kernel"].dtype == np.int8
    assert 1 <= weights["divisor"].min() <= weights["divisor"].max() <= 32768
    expected = int_layers.conv2d(inputs, **{
        k: weights[k] for k in ("kernel", "bias", "divisor", "low", "high")},
        stride=stride, transpose=transpose)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(native.int_conv2d(inputs, **{
        k: weights[k] for k in ("kernel", "bias", "divisor", "low", "high")},
        stride=stride, transpose=transpose), expected)


@pytest.mark.parametrize("seed", range(4))
def test_it_trains_through_the_rounding(seed):
  """A 1x1 layer learns y = 3x from any start: every variable gets a
  gradient, and the error falls to nearly nothing."""
  tf.keras.utils.set_random_seed(seed)
  rng = np.random.default_rng(seed)
  layer = integer_layers.IntegerConv2D(1, 1, low=-512, high=512)
  inputs = tf.constant(rng.integers(-100, 100, (64, 4, 4, 1)), tf.float32)
  optimizer = tf.keras.optimizers.Adam(0.02)
  losses = []
  for _ in range(200):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(layer(inputs) - 3. * inputs))
    grads = tape.gradient(loss, layer.trainable_variables)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, layer.trainable_variables))
    losses.append(float(loss))
  assert losses[-1] < 0.01 * losses[0]


def test_a_fan_in_beyond_exact_float32_sums_is_refused():
  layer = integer_layers.IntegerConv2D(4, 3)
  with pytest.raises(ValueError, match="fan-in 1008 above 1000"):
    layer.build((None, 8, 8, 112))
