"""The β-VAE classifier paper's β-VAE, whose coded latent mean is classified.

Encoder: convolutions of `filters` feature maps with `kernel_size` kernels
and zero padding (kernel - 1) // 2 (the paper's 1 for its 4x4 kernels), the
first two at stride 2 and the rest at stride 1 (32, 64, 64 with 4x4
kernels: 28x28 -> 14 -> 7 -> 6), batch norm and ReLU
after each, optionally the paper's extra 3x3 stride-1 layer (its QuickDraw
model), then dense heads for the mean and log-variance of `latent_dim`
Gaussians. The decoder mirrors it with transposed convolutions.

Training is two stages (see `vae.VariationalClassifier`): the β-VAE with a
classifier riding along on its stopped latent, then, with
`--freeze_encoder_from`, a classifier (`--classifier=mlp2|selu5`) trained on
the frozen VAE, as the paper's Table 1 reports.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf.models import base, vae
from tfvaeclf.models.registry import register

__all__ = ["BetaVAEConfig", "BetaVAEClassifier"]

STRIDES = (2, 2)  # of the first convolutions; the rest keep the size


@dataclasses.dataclass
class BetaVAEConfig(vae.VAEConfig):
  filters: tuple = base.setting(  # the first two stride 2, see STRIDES
      (32, 64, 64), "Conv widths of the encoder.")
  kernel_size: int = base.setting(4, "Conv kernel size of the encoder.")
  extra_conv: bool = base.setting(
      False, "The paper's extra 3x3 stride-1 layer (QuickDraw).")
  latent_dim: int = base.setting(20, "Latent dimensions.")


def _layer_plan(config):
  """(filters, kernel, stride) of each encoder convolution."""
  plan = [(width, config.kernel_size, STRIDES[i] if i < len(STRIDES) else 1)
          for i, width in enumerate(config.filters)]
  if config.extra_conv:
    plan.append((config.filters[-1], 3, 1))
  return plan


def _padding(kernel):
  return (kernel - 1) // 2


def _feature_sizes(plan, image_shape):
  """(height, width) of the image and after each encoder convolution."""
  sizes = [tuple(image_shape[:2])]
  for _, kernel, stride in plan:
    sizes.append(tuple((s + 2 * _padding(kernel) - kernel) // stride + 1
                       for s in sizes[-1]))
  return sizes


class Encoder(tf.keras.layers.Layer):
  """Image -> (mean, log-variance), each (batch, 1, 1, latent_dim)."""

  def __init__(self, plan, latent_dim):
    super().__init__(name="encoder")
    self.trunk = tf.keras.Sequential(name="trunk")
    for width, kernel, stride in plan:
      self.trunk.add(tf.keras.layers.ZeroPadding2D(_padding(kernel)))
      self.trunk.add(tf.keras.layers.Conv2D(width, kernel, stride))
      self.trunk.add(tf.keras.layers.BatchNormalization())
      self.trunk.add(tf.keras.layers.ReLU())
    self.trunk.add(tf.keras.layers.Flatten())
    self.mean = tf.keras.layers.Dense(latent_dim, name="mean")
    self.log_variance = tf.keras.layers.Dense(latent_dim, name="log_variance")

  def call(self, images, training=None):
    features = self.trunk(images, training=training)
    return (self.mean(features)[:, None, None, :],
            self.log_variance(features)[:, None, None, :])


class Decoder(tf.keras.Sequential):
  """Latent -> pixel logits: the encoder's convolutions transposed.

  Each transposed convolution gets the output padding that restores the
  exact size its mirror took in (28 from 14 with a 3x3 kernel, say).
  """

  def __init__(self, plan, image_shape):
    super().__init__(name="decoder")
    sizes = _feature_sizes(plan, image_shape)
    channels = [image_shape[-1], *(width for width, _, _ in plan)]
    self.add(tf.keras.layers.Flatten())
    self.add(tf.keras.layers.Dense(sizes[-1][0] * sizes[-1][1] * channels[-1]))
    self.add(tf.keras.layers.Reshape((*sizes[-1], channels[-1])))
    for i in reversed(range(len(plan))):
      _, kernel, stride = plan[i]
      self.add(tf.keras.layers.BatchNormalization())
      self.add(tf.keras.layers.ReLU())
      self.add(tf.keras.layers.Conv2DTranspose(
          channels[i], kernel, stride, output_padding=tuple(
              target - ((size - 1) * stride + kernel - 2 * _padding(kernel))
              for target, size in zip(sizes[i], sizes[i + 1]))))
      self.add(tf.keras.layers.Cropping2D(_padding(kernel)))


@register("beta_vae")
class BetaVAEClassifier(vae.VariationalClassifier):
  """A β-VAE; classifiers read its quantized, range-coded mean."""

  Config = BetaVAEConfig
  CONV_LAYERS_FIELD = "filters"

  def __init__(self, config):
    super().__init__(config)
    plan = _layer_plan(config)
    if min(_feature_sizes(plan, config.image_shape)[-1]) < 1:
      raise ValueError(f"Images of {config.image_shape} are too small for "
                       f"{len(plan)} convolutions.")
    self.encoder = Encoder(plan, config.latent_dim)
    self.decoder = Decoder(plan, config.image_shape)
    self._finish_init(config.latent_dim)
