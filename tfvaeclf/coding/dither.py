"""Shared randomness for universal quantization: a dither both ends agree on.

Universal (dithered) quantization sends `m = round(y + u)` and decodes
`y_hat = m - u`, where sender and receiver draw the same dither `u`,
uniform on [-1/2, 1/2). Then `y_hat - y` is uniform and independent of `y`,
exactly the additive noise the model trains with.

Both ends must compute `u` bit for bit, in TensorFlow (training, the
server) and in numpy (the board, which has no TensorFlow). So `u` is not
drawn from a generator but computed: an integer hash of (seed, dither index
of the image, index of the element in the image's latent), with
32-bit arithmetic done in int64 where no product can overflow, and 24 of
its bits scaled to a float32 that both libraries represent exactly. The
seed travels in the file header (`bitstream`); image i of a file takes
dither index i, a message its counter (taken modulo 2**32).

This module imports without TensorFlow; `tf_dither` imports it when called.
"""

import numpy as np

__all__ = ["np_dither", "tf_dither", "MAX_SEED"]

MAX_SEED = 2**32 - 1
_MASK = 0xFFFFFFFF
# Odd multipliers below 2**31: a 32-bit value times one stays below 2**63.
_MULTIPLIERS = (0x7FEB352D, 0x2C1B3C6D)
_GOLDEN = 0x9E3779B9


def _mix(x, right_shift):
  """A 32-bit avalanche hash (xor-shift-multiply) of int64 values."""
  for multiplier in _MULTIPLIERS:
    x = ((x ^ right_shift(x, 16)) * multiplier) & _MASK
  return x ^ right_shift(x, 15)


def _dither_bits(seed, images, elements, right_shift):
  """24 random bits for each (image, element) pair, from int64 indexes."""
  # The golden-ratio offsets keep the hash off its fixed point at zero.
  key = _mix((seed + _GOLDEN) & _MASK, right_shift)
  key = _mix((key + images + _GOLDEN) & _MASK, right_shift)
  return right_shift(_mix((key + elements) & _MASK, right_shift), 8)


# 24 bits times 2**-24, less one half: exact in float32 on both ends.
_SCALE, _SHIFT = np.float32(2.**-24), np.float32(.5)


def np_dither(seed, num_images, shape, first=0):
  """float32 (num_images, *shape): the dither of `num_images` images coded
  with `seed`, of dither indexes `first`, `first + 1`, ...; or, if
  `num_images` is a sequence, of the images at those indexes (plus
  `first`)."""
  images = first + (
      np.arange(num_images, dtype=np.int64) if np.ndim(num_images) == 0
      else np.asarray(num_images, np.int64)).reshape(-1, 1)
  elements = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(1, -1)
  bits = _dither_bits(np.int64(seed), images, elements, np.right_shift)
  u = bits.astype(np.float32) * _SCALE - _SHIFT
  return u.reshape(len(images), *shape)


def tf_dither(seed, num_images, shape, first=0):
  """`np_dither` in TensorFlow; `seed`, `num_images` and `first` may be
  tensors."""
  import tensorflow as tf
  first = tf.cast(first, tf.int64)
  images = tf.reshape(
      tf.range(first, first + tf.cast(num_images, tf.int64)), (-1, 1))
  elements = tf.reshape(
      tf.range(int(np.prod(shape)), dtype=tf.int64), (1, -1))
  bits = _dither_bits(tf.cast(seed, tf.int64), images, elements,
                      tf.bitwise.right_shift)
  u = tf.cast(bits, tf.float32) * _SCALE - _SHIFT
  return tf.reshape(u, tf.concat([[tf.cast(num_images, tf.int32)],
                                  tf.constant(shape, tf.int32)], 0))
