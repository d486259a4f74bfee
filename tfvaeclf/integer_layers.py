"""Keras layers that train integer networks: `coding/int_layers`' rule.

`IntegerConv2D` computes, in float32 on integer-valued tensors, exactly the
integers `coding.int_layers.conv2d` (numpy) and `csrc/int_layers.c` (the
board, a microcontroller, the server) compute from its `integer_weights()`:
int8 kernel taps, an int32 bias, a rounding division by a per-channel
divisor, a clip. Its variables are floats; the forward pass rounds them
(kernel to [-128, 127], divisor to [1, 32768]) and rounds the division,
with straight-through gradients: the quantization-aware training of Ballé,
Johnston and Minnen's integer networks (ICLR 2019). The kernel and bias
variables are in units of 1/128 of an integer tap, so that an optimizer's
usual steps move a tap by a few units: a float convolution's scale.

Exactness: float32 sums of integers are exact below 2**24, so the layer
refuses a fan-in (taps a sum adds) above 1,000 and clips its bias to
+-2**22; the division runs in float64.
"""

import numpy as np
import tensorflow as tf

from tfvaeclf.coding import int_layers

__all__ = ["IntegerConv2D", "round_st"]

_MAX_FAN_IN = 1000
_MAX_BIAS = 2.**22
_TAP = 128.  # an integer tap per unit of the kernel variable


def round_st(x):
  """round(x), with the gradient of the identity."""
  return x + tf.stop_gradient(tf.round(x) - x)


def _floor_st(x):
  return x + tf.stop_gradient(tf.floor(x) - x)


class IntegerConv2D(tf.keras.layers.Layer):
  """A convolution (or a transposed one) of the integer rule.

  Inputs must be integer-valued in [-128, 127]: the outputs of a layer
  clipped there, or integers the caller clips. `low`, `high` clip the
  outputs (low 0: a ReLU); an output that feeds another layer must stay in
  [-128, 127]. `divisor_init` sets the starting divisor of every channel,
  the output scale; at 128 the layer starts with He's initialization.
  `bias_init`: the starting integer bias, a number or one per channel.
  """

  def __init__(self, filters, kernel_size, strides=1, transpose=False,
               low=-128, high=127, divisor_init=128., bias_init=0.,
               **kwargs):
    super().__init__(**kwargs)
    self.filters = int(filters)
    self.kernel_size = int(kernel_size)
    self.strides = int(strides)
    self.transpose = bool(transpose)
    self.low, self.high = int(low), int(high)
    self.divisor_init = float(divisor_init)
    self.bias_init = np.broadcast_to(np.asarray(bias_init, np.float32),
                                     (self.filters,))
    if self.strides not in (1, 2):
      raise ValueError(f"strides must be 1 or 2, not {strides}")

  def build(self, input_shape):
    channels = int(input_shape[-1])
    fan_in = self.kernel_size**2 * channels
    if fan_in > _MAX_FAN_IN:
      raise ValueError(f"{self.name}: fan-in {fan_in} above {_MAX_FAN_IN}: "
                       "its float32 sums would not be exact")
    limit = min(np.sqrt(6. / fan_in), 1.)  # He's uniform, in int8
    # Kept in the int8 range, where the rounding passes gradients.
    self.kernel = self.add_weight(
        "kernel", (self.kernel_size, self.kernel_size, channels,
                   self.filters),
        initializer=tf.keras.initializers.RandomUniform(-limit, limit),
        constraint=lambda v: tf.clip_by_value(v, -1., 127. / _TAP))
    self.bias = self.add_weight(
        "bias", (self.filters,),
        initializer=tf.keras.initializers.Constant(self.bias_init / _TAP))
    self.log_divisor = self.add_weight(
        "log_divisor", (self.filters,),
        initializer=tf.keras.initializers.Constant(
            np.log(self.divisor_init)))

  def _integers(self):
    """(kernel, bias, divisor) as integer-valued float32 tensors."""
    kernel = round_st(tf.clip_by_value(_TAP * self.kernel, -128., 127.))
    bias = round_st(tf.clip_by_value(_TAP * self.bias, -_MAX_BIAS,
                                     _MAX_BIAS))
    divisor = round_st(tf.clip_by_value(tf.exp(self.log_divisor), 1.,
                                        float(int_layers.MAX_DIVISOR)))
    return kernel, bias, divisor

  def call(self, inputs):
    kernel, bias, divisor = self._integers()
    if self.transpose:
      shape = tf.shape(inputs)
      sums = tf.nn.conv2d_transpose(
          inputs, tf.transpose(kernel, (0, 1, 3, 2)),
          tf.stack([shape[0], shape[1] * self.strides,
                    shape[2] * self.strides, self.filters]),
          self.strides, "SAME")
    else:
      sums = tf.nn.conv2d(inputs, kernel, self.strides, "SAME")
    acc = tf.cast(sums + bias, tf.float64)
    divisor = tf.cast(divisor, tf.float64)
    values = _floor_st((acc + tf.floor(divisor / 2.)) / divisor)
    return tf.clip_by_value(tf.cast(values, tf.float32), float(self.low),
                            float(self.high))

  def integer_weights(self):
    """What the integer runtimes take: {"kernel": int8 (k, k, in, out),
    "bias", "divisor": int32 (out,), "stride", "transpose", "low",
    "high"}."""
    kernel, bias, divisor = (t.numpy() for t in self._integers())
    return {"kernel": kernel.astype(np.int8), "bias": bias.astype(np.int32),
            "divisor": divisor.astype(np.int32), "stride": self.strides,
            "transpose": self.transpose, "low": self.low, "high": self.high}

  def get_config(self):
    return {**super().get_config(), "filters": self.filters,
            "kernel_size": self.kernel_size, "strides": self.strides,
            "transpose": self.transpose, "low": self.low, "high": self.high,
            "divisor_init": self.divisor_init,
            "bias_init": self.bias_init.tolist()}
