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

On natural colour images two options put the split where split computing
puts it: `encoder_blocks` makes the board's encoder a small ResNet (a
stem and residual stages, as MLPerf Tiny's ResNet-8) instead of plain
strided convolutions, and `classifier_filters` gives the server residual
stages on a spatial latent, so the deep, wide part of the network runs
where compute is cheap and only the latent crosses the link.

Trained end to end on cross-entropy + lmbda * bpp (+ gamma * MSE).
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import backbones, coders
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
  encoder_blocks: int = base.setting(
      0, "Residual blocks a stage of the encoder, after a stride-1 3x3 "
      "stem; one stage a --filters width, the first at stride 1, each later "
      "one at stride 2, then the latent layer. 0: plain stride-2 "
      "convolutions of --kernel_size.")
  classifier_filters: tuple = base.setting(
      (), "Widths of residual stages the classifier runs on a spatial "
      "latent (the first at stride 1, each later one at stride 2), then a "
      "global average pool; empty: the classifier flattens the latent.")
  classifier_units: tuple = base.setting(
      (128,), "Hidden widths of the latent classifier's dense layers.")
  decoder: bool = base.setting(
      False, "Also train a light decoder for reconstructions.")


def _latent_layers(latent_channels, latent):
  """Features -> latent: a linear stride-2 conv (spatial) or a linear dense
  layer on the flattened features (global)."""
  if latent == "global":
    return [tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(latent_channels, name="latent")]
  return [tf.keras.layers.Conv2D(latent_channels, 3, strides=2,
                                 padding="same", name="latent")]


class AnalysisTransform(tf.keras.Sequential):
  """Image -> latent: stride-2 convolutions, then the latent layer."""

  def __init__(self, filters, kernel_size, latent_channels, latent="spatial"):
    super().__init__(name="analysis")
    for width in filters:
      self.add(tf.keras.layers.Conv2D(
          width, kernel_size, strides=2, padding="same", activation="relu"))
    for layer in _latent_layers(latent_channels, latent):
      self.add(layer)


def residual_analysis(image_shape, filters, blocks, latent_channels, latent):
  """Image -> latent: a ResNet's stem and stages (`blocks` residual blocks
  of each width in `filters`), then the latent layer. Batch norm folds
  into the convolutions when the board's int8 model is made."""
  features = backbones.residual_features(image_shape, filters, blocks,
                                         name="features")
  x = features.output
  for layer in _latent_layers(latent_channels, latent):
    x = layer(x)
  return tf.keras.Model(features.input, x, name="analysis")


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


def residual_latent_classifier(latent_shape, filters, units, num_classes):
  """Spatial quantized latent -> class logits, on the server: a 3x3 conv
  with batch norm and ELU (as `LatentClassifier`, so that a latent rounded
  to zero still passes gradients), residual stages of `filters`, a global
  average pool, then dense layers of `units`."""
  layers = tf.keras.layers
  latent_hat = tf.keras.Input(tuple(latent_shape), name="latent_hat")
  x = layers.Conv2D(filters[0], 3, padding="same", use_bias=False,
                    name="classifier_stem_conv")(latent_hat)
  x = layers.BatchNormalization(momentum=0.9, name="classifier_stem_bn")(x)
  x = layers.ELU(name="classifier_stem_elu")(x)
  x = backbones.residual_stages(x, filters, 1, prefix="classifier_")
  x = layers.GlobalAveragePooling2D(name="classifier_pool")(x)
  for width in units:
    x = layers.Dense(width, activation="elu")(x)
  return tf.keras.Model(latent_hat, layers.Dense(num_classes)(x),
                        name="classifier")


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
    if config.decoder and config.encoder_blocks:
      raise ValueError("--decoder mirrors plain strided convolutions; it "
                       "cannot reconstruct from --encoder_blocks > 0.")
    if config.classifier_filters and config.latent == "global":
      raise ValueError("--classifier_filters convolve a spatial latent; "
                       "a --latent=global one has no space to convolve.")
    super().__init__(config)
    if config.encoder_blocks:
      self.analysis = residual_analysis(
          config.image_shape, config.filters, config.encoder_blocks,
          config.latent_channels, config.latent)
    else:
      self.analysis = AnalysisTransform(
          config.filters, config.kernel_size, config.latent_channels,
          config.latent)
    # A global latent is one vector an image: its one axis is the string.
    self.coder = coders.build_coder(
        config.entropy_model, config.latent_channels,
        coding_rank=1 if config.latent == "global" else 3)
    if config.classifier_filters:
      latent_shape = self.analysis.compute_output_shape(
          (1, *config.image_shape))[1:]
      self.classifier = residual_latent_classifier(
          latent_shape, config.classifier_filters, config.classifier_units,
          config.num_classes)
    else:
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
