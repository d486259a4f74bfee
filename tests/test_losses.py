"""The losses and metrics against their closed forms, computed in NumPy."""

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import baselines, losses

RNG = np.random.default_rng(0)


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_cross_entropy_is_minus_the_log_probability_of_the_label():
  logits = RNG.normal(size=(5, 4)).astype(np.float32)
  labels = np.array([0, 3, 1, 1, 2])
  expected = -_log_softmax(logits)[np.arange(5), labels]
  np.testing.assert_allclose(losses.cross_entropy(labels, logits), expected,
                             rtol=1e-5)
  # Uniform logits: log of the number of classes.
  np.testing.assert_allclose(
      losses.cross_entropy([2], np.zeros((1, 4), np.float32)), [np.log(4.)],
      rtol=1e-6)


def test_softmax_kl_is_zero_for_the_same_predictions_and_positive_else():
  target = RNG.normal(size=(6, 10)).astype(np.float32)
  logits = RNG.normal(size=(6, 10)).astype(np.float32)
  p, log_q = np.exp(_log_softmax(target)), _log_softmax(logits)
  expected = np.sum(p * (np.log(p) - log_q), -1)
  kl = losses.softmax_kl(target, logits).numpy()
  np.testing.assert_allclose(kl, expected, rtol=1e-4)
  assert np.all(kl > 0)
  # Shifting logits leaves a softmax unchanged.
  np.testing.assert_allclose(losses.softmax_kl(target, target + 3.),
                             np.zeros(6), atol=1e-5)


def test_bernoulli_nll_sums_pixel_log_likelihoods():
  images = RNG.uniform(size=(3, 4, 4, 1)).astype(np.float32)
  logits = RNG.normal(size=(3, 4, 4, 1)).astype(np.float32)
  p = 1. / (1. + np.exp(-logits))
  expected = -np.sum(images * np.log(p) + (1. - images) * np.log(1. - p),
                     axis=(1, 2, 3))
  np.testing.assert_allclose(losses.bernoulli_nll(images, logits), expected,
                             rtol=1e-5)


def test_gaussian_kl_is_the_closed_form_against_the_unit_normal():
  mean = tf.constant([[[[0., 1., -2.]]], [[[0., 0., 0.]]]])
  log_variance = tf.constant([[[[0., np.log(4.), np.log(.25)]]],
                              [[[0., 0., 0.]]]])
  expected = sum(.5 * (m * m + v - 1. - np.log(v))
                 for m, v in [(0., 1.), (1., 4.), (-2., .25)])
  np.testing.assert_allclose(losses.gaussian_kl(mean, log_variance),
                             [expected, 0.], rtol=1e-5)


def test_mse_averages_each_example_alone():
  images = RNG.uniform(size=(4, 5, 6, 3)).astype(np.float32)
  x_hat = RNG.uniform(size=(4, 5, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(losses.mse(images, x_hat),
                             np.mean((images - x_hat) ** 2, axis=(1, 2, 3)),
                             rtol=1e-5)
  assert losses.mse(np.zeros((2, 3)), np.ones((2, 3))).numpy().tolist() == [
      1., 1.]


@pytest.mark.parametrize("peak", [1., 255.])
def test_psnr_is_ten_log10_of_peak_squared_over_mse(peak):
  mse = np.array([1e-2, 1., 1e-4]) * peak ** 2
  np.testing.assert_allclose(losses.psnr(mse, peak=peak), [20., 0., 40.],
                             rtol=1e-6)
  # A lossless image: large, and finite.
  assert 90. < float(losses.psnr(np.zeros(1), peak=peak)[0]) < np.inf


def test_psnr_of_float32_and_8_bit_pixels_agree():
  images = RNG.integers(0, 256, size=(3, 8, 8, 1))
  decoded = np.clip(images + RNG.integers(-9, 10, size=images.shape), 0, 255)
  eight_bit = losses.psnr(losses.mse(images.astype(np.float64),
                                     decoded.astype(np.float64)), peak=255.)
  floats = losses.psnr(losses.mse((images / 255.).astype(np.float32),
                                  (decoded / 255.).astype(np.float32)))
  np.testing.assert_allclose(floats, eight_bit, rtol=1e-5)


def test_codec_baselines_measure_psnr_as_numpy_does():
  images = RNG.integers(0, 256, size=(4, 6, 6, 3)).astype(np.uint8)
  decoded = np.clip(images + RNG.integers(-20, 21, size=images.shape), 0,
                    255).astype(np.uint8)
  mse = np.mean((images.astype(np.float64) - decoded) ** 2, axis=(1, 2, 3))
  assert baselines.psnr(images, decoded) == pytest.approx(
      np.mean(10 * np.log10(255. ** 2 / mse)), rel=1e-12)
