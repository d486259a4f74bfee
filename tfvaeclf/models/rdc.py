"""Universal rate-distortion-classification representations (after the
paper "Universal rate-distortion-classification representations for lossy
compression").

An encoder f maps the image to `latent_dim` numbers in [0, levels - 1];
universal (dithered) quantization sends each as one of `levels` symbols, a
fixed rate of R = latent_dim * log2(levels) bits (`coders.DitheredCoder`,
which also range-codes the symbols for the real rate). A decoder g rebuilds
the image, and the server classifies the rebuilt image with a pretrained
classifier c that never changes (`--backbone_from`, a `classifier` model
dir, whose weights the trainer loads: see `classifier.load_backbone`).
Training minimizes

    E ||X - X_hat||^2 + lambda_cls * CE(c(X_hat), s)

so g is a decoder and, as lambda_cls grows, a generator of images c
classifies right. End to end, f and g train together. A universal model
takes f (and the symbols' prior) from an end-to-end model dir and keeps it
frozen (`--freeze_encoder_from`) while a new g trains for another
lambda_cls: one encoder, many decoders.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import coders
from tfvaeclf.models import base, classifier
from tfvaeclf.models.registry import register

__all__ = ["RDCConfig", "UniversalRDC"]


@dataclasses.dataclass
class RDCConfig(classifier.FrozenBackboneConfig):  # c is that backbone
  lmbda: float = 0.  # the rate is fixed: nothing to weigh
  lambda_cls: float = base.setting(
      0., "Weight of the frozen classifier's cross-entropy against the "
      "MSE.")
  filters: tuple = base.setting(
      (32, 64), "Conv widths of the encoder, each stride 2.")
  kernel_size: int = base.setting(5, "Conv kernel size of the encoder.")
  latent_dim: int = base.setting(8, "Latent dimensions.")
  levels: int = base.setting(
      4, "Quantization levels per latent entry (L).")
  dither_seed: int = base.setting(
      0, "Seed of the shared dither its files carry.")


class Encoder(tf.keras.Sequential):
  """Image -> latent_dim values in [0, levels - 1], shaped (1, 1, dim)."""

  def __init__(self, filters, kernel_size, latent_dim, levels):
    super().__init__(name="encoder")
    for width in filters:
      self.add(tf.keras.layers.Conv2D(width, kernel_size, strides=2,
                                      padding="same", activation="elu"))
    self.add(tf.keras.layers.Flatten())
    self.add(tf.keras.layers.Dense(latent_dim))
    # Adam moves every weight of a wide dense layer at once, and within a
    # few steps the sigmoid saturates for good (every symbol L - 1): batch
    # norm keeps its input where the sigmoid still has a slope.
    self.add(tf.keras.layers.BatchNormalization())
    self.add(tf.keras.layers.Activation("sigmoid"))
    self.add(tf.keras.layers.Rescaling(levels - 1.))
    self.add(tf.keras.layers.Reshape((1, 1, latent_dim)))


class Decoder(tf.keras.Sequential):
  """Latent -> image: dense to a small feature map, stride-2 transposed
  convolutions up to the image, sigmoid pixels, cropped to size."""

  def __init__(self, filters, kernel_size, image_shape):
    super().__init__(name="decoder")
    height, width, channels = image_shape
    stride = 2 ** len(filters)
    start = (-(-height // stride), -(-width // stride), filters[-1])
    self.add(tf.keras.layers.Flatten())
    self.add(tf.keras.layers.Dense(start[0] * start[1] * start[2],
                                   activation="elu"))
    self.add(tf.keras.layers.Reshape(start))
    for units in reversed(filters[:-1]):
      self.add(tf.keras.layers.Conv2DTranspose(
          units, kernel_size, strides=2, padding="same", activation="elu"))
    self.add(tf.keras.layers.Conv2DTranspose(
        channels, kernel_size, strides=2, padding="same",
        activation="sigmoid"))
    self.add(tf.keras.layers.Cropping2D(
        ((0, start[0] * stride - height), (0, start[1] * stride - width))))


@register("rdc")
class UniversalRDC(base.CompressiveClassifier):
  """f -> dithered L-level quantizer -> g -> frozen classifier c."""

  Config = RDCConfig
  PRETRAINED_PARTS = ("encoder", "coder")
  BACKBONE = "judge"
  load_backbone = classifier.load_backbone
  METRIC_NAMES = ("loss", "ce", "bpp", "mse")

  def __init__(self, config):
    if config.lambda_cls < 0:
      raise ValueError("--lambda_cls must be >= 0")
    if config.entropy_model != "factorized":
      raise ValueError(
          "rdc codes its fixed-rate symbols with --entropy_model=factorized "
          "only (a conditional coder would shift them off the integers)")
    super().__init__(config)
    self.encoder = Encoder(config.filters, config.kernel_size,
                           config.latent_dim, config.levels)
    self.coder = coders.DitheredCoder((1, 1, config.latent_dim),
                                       config.levels, config.dither_seed)
    self.decoder = Decoder(config.filters, config.kernel_size,
                           config.image_shape)
    self.judge = classifier.build_backbone(
        config.backbone, config.backbone_widths, config.image_shape,
        config.num_classes, trainable=False)

  def encode(self, images, training=False):
    return self.encoder(images, training=training)

  @property
  def has_decoder(self):
    return True

  def reconstruct(self, latent_hat, training=False):
    return self.decoder(latent_hat, training=training)

  def classify(self, latent_hat, training=False):
    """c(g(y_hat)): the server classifies the image it rebuilds."""
    return self.judge(self.reconstruct(latent_hat), training=False)

  def training_logits(self, outputs, training):
    """c(x_hat): the image is decoded once a step."""
    return self.judge(outputs["x_hat"], training=False)

  def loss_terms(self, outputs, labels):
    """MSE + lambda_cls * CE, and the symbols' rate, which trains only
    their prior (the coder stops it before the encoder)."""
    terms = super().loss_terms(outputs, labels)
    terms["loss"] = (terms["mse"] + self.config.lambda_cls * terms["ce"]
                     + terms["bpp"])
    return terms
