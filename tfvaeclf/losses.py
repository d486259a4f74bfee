"""Losses and metrics, each written once: for training, evaluation and codecs.

Every function returns one value per example (the batch on the first
axis), so training takes batch means and evaluation sums over a split:

    cross_entropy(labels, logits)     nats, of integer labels
    softmax_kl(target_logits, logits) nats, KL(softmax(target) || softmax)
    bernoulli_nll(images, logits)     nats, pixels in [0, 1], summed
    gaussian_kl(mean, log_variance)   nats, KL(N(mean, var) || N(0, 1)), summed
    mse(images, x_hat)                mean over every non-batch axis
    psnr(mse, peak=1.)                dB, of an MSE at that peak value

They take tensors or NumPy arrays (a codec's float64 pixels, say).
"""

import math

import tensorflow as tf

__all__ = ["cross_entropy", "softmax_kl", "bernoulli_nll", "gaussian_kl",
           "mse", "psnr"]

_MIN_MSE = 1e-10  # a lossless image has a large PSNR, not an infinite one


def _example_axes(x):
  return tuple(range(1, len(x.shape)))


def cross_entropy(labels, logits):
  """-log softmax(logits)[label]: the classification loss."""
  return tf.keras.losses.sparse_categorical_crossentropy(
      labels, logits, from_logits=True)


def softmax_kl(target_logits, logits):
  """KL(softmax(target_logits) || softmax(logits)): how far predictions are
  from a teacher's (a split model's uncut network)."""
  target = tf.nn.log_softmax(target_logits)
  return tf.reduce_sum(tf.exp(target) * (target - tf.nn.log_softmax(logits)),
                       -1)


def bernoulli_nll(images, logits):
  """-log p(images) of independent Bernoulli pixels: a VAE's
  reconstruction term, from the decoder's logits (stable in the tails)."""
  return tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
      labels=images, logits=logits), axis=_example_axes(images))


def gaussian_kl(mean, log_variance):
  """KL(N(mean, exp(log_variance)) || N(0, 1)) in closed form: a VAE's
  prior term."""
  return .5 * tf.reduce_sum(
      tf.square(mean) + tf.exp(log_variance) - 1. - log_variance,
      axis=_example_axes(mean))


def mse(images, x_hat):
  """Mean squared error of each reconstruction."""
  return tf.reduce_mean(tf.math.squared_difference(images, x_hat),
                        axis=_example_axes(images))


def psnr(mse_values, peak=1.):
  """Peak signal-to-noise ratio: 10 log10(peak^2 / MSE), 1. for float
  pixels, 255. for 8-bit ones."""
  return 10. * tf.math.log(
      peak ** 2 / tf.maximum(mse_values, _MIN_MSE)) / math.log(10.)
