"""The joint VAE compressor-classifier (the VAE-classifier paper's).

A convolutional analysis transform maps the image to a small latent; the
latent is quantized and range-coded under a learned prior; the classifier
reads the quantized latent directly, so the server never rebuilds the image.
The latent is spatial (a stride-2 conv: H/8 x W/8 x channels) or global (a
dense layer: `latent_channels` entries per image). At a few bytes per
image the global one is cheaper: under a factorized prior every element of
a spatial latent costs a fraction of a bit, where a small dense latent
carries about the class and little else.
An optional light synthesis transform reconstructs the image from the same
latent when a person needs to look at it.

Trained end to end on cross-entropy + lmbda * bpp (+ gamma * MSE).
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import coders
from tfvaeclf.models import base
from tfvaeclf.models.registry import register

__all__ = ["JointConfig", "JointVAEClassifier", "LATENTS"]

LATENTS = ("spatial", "global")


@dataclasses.dataclass
class JointConfig(base.BaseConfig):
  entropy_model: str = base.entropy_model_setting()
  lmbda: float = base.setting(1.0, "Weight of the rate, in bits per pixel.")
  gamma: float = base.setting(
      0.0, "Weight of the reconstruction MSE (with --decoder).")
  filters: tuple = base.setting(
      (32, 64), "Conv widths of the encoder, each stride 2.")
  kernel_size: int = base.setting(5, "Conv kernel size of the encoder.")
  latent: str = base.setting(
      "spatial", "The latent's shape: spatial (a feature map) or global (a "
      "vector).", choices=LATENTS)
  latent_channels: int = base.setting(
      16, "Channels of the latent: of a further stride-2 conv (spatial), or "
      "entries of a dense layer (global).")
  classifier_units: tuple = base.setting(
      (128,), "Hidden widths of the latent classifier.")
  decoder: bool = base.setting(
      False, "Also train a light decoder for reconstructions.")


class AnalysisTransform(tf.keras.Sequential):
  """Image -> latent: stride-2 convolutions, then a linear stride-2 conv
  (spatial) or a linear dense layer on the flattened features (global)."""

  def __init__(self, filters, kernel_size, latent_channels, latent="spatial"):
    super().__init__(name="analysis")
    for width in filters:
      self.add(tf.keras.layers.Conv2D(
          width, kernel_size, strides=2, padding="same", activation="relu"))
    if latent == "global":
      self.add(tf.keras.layers.Flatten())
      self.add(tf.keras.layers.Dense(latent_channels, name="latent"))
    else:
      self.add(tf.keras.layers.Conv2D(
          latent_channels, 3, strides=2, padding="same", name="latent"))


class SynthesisTransform(tf.keras.Sequential):
  """Latent -> image: the analysis transform mirrored, cropped to size.

  The output layer is linear: a sigmoid saturates at black on MNIST-like
  data within a few steps and never recovers. Images are clipped to [0, 1]
  only outside training.
  """

  def __init__(self, filters, kernel_size, image_shape):
    super().__init__(name="synthesis")
    for width in reversed(filters):
      self.add(tf.keras.layers.Conv2DTranspose(
          width, kernel_size, strides=2, padding="same", activation="elu"))
    self.add(tf.keras.layers.Conv2DTranspose(
        image_shape[-1], kernel_size, strides=2, padding="same",
        activation=None))
    self._image_shape = tuple(image_shape)

  def call(self, latent_hat, training=None):
    x_hat = super().call(latent_hat, training=training)
    height, width, _ = self._image_shape
    return x_hat[:, :height, :width, :]


class LatentClassifier(tf.keras.Sequential):
  """Quantized latent -> class logits.

  ELU, not ReLU: at initialization the latent rounds to exactly zero, and
  ReLU's zero slope there would stop every gradient to the encoder.
  """

  def __init__(self, units, num_classes):
    super().__init__(name="classifier")
    self.add(tf.keras.layers.Flatten())
    for width in units:
      self.add(tf.keras.layers.Dense(width, activation="elu"))
    self.add(tf.keras.layers.Dense(num_classes))


@register("joint")
class JointVAEClassifier(base.CompressiveClassifier):
  """The VAE-classifier paper's model: classify from the quantized latent."""

  Config = JointConfig
  PRETRAINED_PARTS = ("analysis", "coder")
  CONV_LAYERS_FIELD = "filters"

  def __init__(self, config):
    if config.decoder and config.gamma <= 0:
      raise ValueError("A decoder needs --gamma > 0 to be trained.")
    if config.latent not in LATENTS:
      raise ValueError(f"Unknown --latent {config.latent!r}; choose one of "
                       f"{', '.join(LATENTS)}.")
    if config.decoder and config.latent == "global":
      raise ValueError("--decoder mirrors a spatial latent; it cannot "
                       "reconstruct from --latent=global.")
    super().__init__(config)
    self.analysis = AnalysisTransform(
        config.filters, config.kernel_size, config.latent_channels,
        config.latent)
    # A global latent is one vector an image: its one axis is the string.
    self.coder = coders.build_coder(
        config.entropy_model, config.latent_channels,
        coding_rank=1 if config.latent == "global" else 3)
    self.classifier = LatentClassifier(
        config.classifier_units, config.num_classes)
    self.synthesis = (
        SynthesisTransform(config.filters, config.kernel_size,
                           config.image_shape)
        if config.decoder else None)

  def encode(self, images, training=False):
    return self.analysis(images, training=training)

  def classify(self, latent_hat, training=False):
    return self.classifier(latent_hat, training=training)

  @property
  def has_decoder(self):
    return self.synthesis is not None

  def reconstruct(self, latent_hat, training=False):
    if self.synthesis is None:
      return super().reconstruct(latent_hat, training)
    x_hat = self.synthesis(latent_hat, training=training)
    return x_hat if training else tf.clip_by_value(x_hat, 0., 1.)
