"""The integer layers: C (`native.int_conv2d`) and numpy (`int_layers`)
give the same integers, TensorFlow's float32 layers give the same sums on
integer-valued tensors, and bad layers are one-line errors."""

import numpy as np
import pytest

from tfvaeclf.coding import int_layers, native


def _random_layer(rng, transpose=None):
  height, width = (int(v) for v in rng.integers(1, 8, 2))
  in_channels, out_channels = (int(v) for v in rng.integers(1, 6, 2))
  kernel_h, kernel_w = (int(rng.choice([1, 2, 3])) for _ in range(2))
  return dict(
      inputs=rng.integers(-128, 128, (int(rng.integers(1, 3)), height, width,
                                      in_channels)),
      kernel=rng.integers(-128, 128, (kernel_h, kernel_w, in_channels,
                                      out_channels)).astype(np.int8),
      bias=rng.integers(-2**20, 2**20, out_channels),
      divisor=rng.integers(1, int_layers.MAX_DIVISOR + 1, out_channels),
      stride=int(rng.choice([1, 2])),
      transpose=bool(rng.integers(2)) if transpose is None else transpose,
      low=int(rng.integers(-2**16, 1)), high=int(rng.integers(0, 2**16)))


def test_c_and_numpy_give_the_same_integers():
  """A property test over 2,000 random layers: shapes, kernels 1-3 a side,
  both strides, both kinds, divisors up to the largest, clips."""
  assert native.available()
  rng = np.random.default_rng(0)
  for _ in range(2000):
    layer = _random_layer(rng)
    expected = int_layers.conv2d(**layer)
    got = native.int_conv2d(**layer)
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected, err_msg=str(layer))


def test_tensorflow_float32_layers_give_the_exact_sums():
  """Training runs TensorFlow's convolutions on integer-valued float32
  tensors: below 2**24 their sums are the integer layers' `acc` exactly
  (divisor 1, no clip), for both kinds and TF's "same" padding."""
  import tensorflow as tf
  rng = np.random.default_rng(1)
  for _ in range(200):
    layer = _random_layer(rng)
    layer.update(bias=np.zeros_like(layer["bias"]),
                 divisor=np.ones_like(layer["divisor"]),
                 low=-2**31, high=2**31 - 1)
    inputs = layer["inputs"].astype(np.float32)
    kernel = layer["kernel"].astype(np.float32)
    stride = layer["stride"]
    if layer["transpose"]:
      batch, height, width, _ = inputs.shape
      sums = tf.nn.conv2d_transpose(
          inputs, np.transpose(kernel, (0, 1, 3, 2)),
          (batch, height * stride, width * stride, kernel.shape[3]), stride,
          "SAME")
    else:
      sums = tf.nn.conv2d(inputs, kernel, stride, "SAME")
    np.testing.assert_array_equal(sums.numpy(), int_layers.conv2d(**layer))


def test_the_division_rounds_halves_up():
  """acc / 4 for acc = -10 ... 10: -2.5 -> -2, -1.5 -> -1, 2.5 -> 3."""
  acc = np.arange(-10, 11)
  layer = dict(inputs=acc.reshape(1, 1, -1, 1),
               kernel=np.ones((1, 1, 1, 1), np.int8), bias=[0], divisor=[4])
  expected = np.floor(acc / 4 + 0.5).astype(np.int32)
  for run in (int_layers.conv2d, native.int_conv2d):
    np.testing.assert_array_equal(run(**layer).ravel(), expected)
  clipped = native.int_conv2d(**layer, low=0, high=1)
  np.testing.assert_array_equal(clipped.ravel(), np.clip(expected, 0, 1))


@pytest.mark.parametrize("change, reason", [
    ({"inputs": np.full((1, 2, 2, 1), 128)}, "an input outside"),
    ({"divisor": [0]}, "a divisor outside"),
    ({"divisor": [int_layers.MAX_DIVISOR + 1]}, "a divisor outside"),
    ({"bias": [2**31 - 2**14 * 9]}, "may pass int32"),
    ({"stride": 3}, "a stride other than 1 or 2"),
    ({"kernel": np.ones((3, 3, 2, 1), np.int8)}, "a size below 1"),
    ({"low": 1, "high": 0}, "low > high"),
])
def test_bad_layers_are_refused_in_one_line(change, reason):
  layer = {"inputs": np.ones((1, 2, 2, 1)), "kernel": np.ones((3, 3, 1, 1),
                                                              np.int8),
           "bias": [0], "divisor": [1], **change}
  for run in (int_layers.conv2d, native.int_conv2d):
    with pytest.raises(ValueError, match=reason) as error:
      run(**layer)
    assert "\n" not in str(error.value)


def test_the_c_code_refuses_what_numpy_refuses():
  """The C function's own checks, called past the wrapper's: an input out
  of range, a divisor of 0, a fan-in whose sum could pass int32."""
  import ctypes
  lib = native._library()  # pylint: disable=protected-access
  inputs = np.full((1, 2, 2, 1), 200, np.int32)
  kernel = np.ones((3, 3, 1, 1), np.int8)
  output = np.full((1, 2, 2, 1), 7, np.int32)

  def status(bias, divisor, layer_inputs=inputs):
    bias, divisor = (np.asarray(a, np.int32) for a in (bias, divisor))
    return lib.il_conv2d(layer_inputs.ctypes.data, 1, 2, 2, 1,
                         kernel.ctypes.data, 3, 3, 1, bias.ctypes.data,
                         divisor.ctypes.data, 1, 0, -10, 10,
                         output.ctypes.data)

  assert status([0], [1]) == 3
  assert status([0], [0], inputs // 2) == 2
  assert status([2**31 - 2**14 * 9], [1], inputs // 2) == 4
  assert lib.il_strerror(4).decode().startswith("the accumulator")
  np.testing.assert_array_equal(output, 7)  # nothing written on refusal
  assert status([0], [1], inputs // 2) == 0
