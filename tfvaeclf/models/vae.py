"""What the VAE kinds (seed 002's grouped VAE, seed 003's β-VAE) share.

A VAE encoder gives the mean and log-variance of a Gaussian posterior. In
training the decoder reads a sample of it and the loss is the β-VAE's:
reconstruction (Bernoulli, summed over pixels) + β·KL(posterior || N(0, I)).
What is coded is the mean, divided by `quantization_step` and rounded by the
kind's coder; the classifier and, at test time, the decoder read that
decoded mean times the step, exactly what a file reproduces.

By default the VAE is trained for reconstruction, not for the task: the
classifier's gradient stops at the latent (seed 003 trains classifiers on a
pretrained, frozen VAE), and the rate shapes the encoder only as much as
`lmbda` says. `encoder_ce_weight` > 0 lets that share of the classifier's
gradient reach the encoder, as seed 000's VAE-classifier trains: the
latent then keeps what the labels need, not only what the pixels need.
`lmbda=0` gives a pure β-VAE whose prior is fitted to it after the fact, in
the same step. A second stage (`--freeze_encoder_from`) then trains a new
classifier head on the frozen VAE.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import entropy
from tfvaeclf.models import base

__all__ = ["VAEConfig", "VariationalClassifier", "LatentMLP",
           "CLASSIFIER_HEADS", "gaussian_kl", "scale_gradient"]


CLASSIFIER_HEADS = ("mlp2", "selu5")


@dataclasses.dataclass
class VAEConfig(base.BaseConfig):
  entropy_model: str = base.entropy_model_setting()
  # The rate always trains the prior in full; `lmbda` only scales its
  # gradient into the encoder, hence a flag name of its own.
  lmbda: float = base.setting(
      0., "Share of the rate's gradient (bits per image) that reaches the "
      "encoder.", flag="encoder_rate_weight", old_flag="lmbda")
  beta: float = base.setting(
      3., "Weight of the KL divergence: 1 is a plain VAE, 0 an "
      "autoencoder.")
  quantization_step: float = base.setting(
      0.1, "The coded latent is round(mean / step).")
  classifier: str = base.setting(
      "mlp2", "The latent classifier head.", flag="head",
      old_flag="classifier", choices=CLASSIFIER_HEADS)
  encoder_ce_weight: float = base.setting(
      0., "Share of the classifier's gradient that reaches the encoder; 0 "
      "is seed 003's unsupervised VAE.")


def gaussian_kl(mean, log_variance):
  """KL(N(mean, exp(log_variance)) || N(0, 1)) in nats, summed per example."""
  return .5 * tf.reduce_sum(
      tf.square(mean) + tf.exp(log_variance) - 1. - log_variance,
      axis=tuple(range(1, mean.shape.rank)))


def scale_gradient(x, factor):
  """`x` forward; its gradient multiplied by `factor` backward."""
  return factor * x + (1. - factor) * tf.stop_gradient(x)


class LatentMLP(tf.keras.Sequential):
  """Decoded latent -> class logits: seed 003's classifier heads.

  mlp2: two dense layers, 15 then the classes (ReLU between).
  selu5: five dense layers with batch norm between them and SELU on each
  hidden output; the seed gives no widths, these halve from 256.
  """

  def __init__(self, head, num_classes):
    super().__init__(name="classifier")
    self.add(tf.keras.layers.Flatten())
    if head == "mlp2":
      self.add(tf.keras.layers.Dense(15, activation="relu"))
    else:
      for width in (256, 128, 64, 32):
        self.add(tf.keras.layers.Dense(width, activation="selu"))
        self.add(tf.keras.layers.BatchNormalization())
    self.add(tf.keras.layers.Dense(num_classes))




class VariationalClassifier(base.CompressiveClassifier):
  """A VAE whose coded mean is classified; kinds supply the transforms.

  A subclass sets `self.encoder` (images -> (mean, log-variance), each
  (batch, *spatial, channels)) and `self.decoder` (latent -> pixel logits)
  and calls `_finish_init(latent_channels)`.
  """

  Config = VAEConfig
  PRETRAINED_PARTS = ("encoder", "decoder", "coder")
  METRIC_NAMES = ("loss", "ce", "bpp", "recon", "kl", "mse")

  def __init__(self, config):
    if config.classifier not in CLASSIFIER_HEADS:
      raise ValueError(f"Unknown classifier {config.classifier!r}; choose "
                       f"from {', '.join(CLASSIFIER_HEADS)}.")
    if config.quantization_step <= 0:
      raise ValueError("--quantization_step must be positive.")
    if config.encoder_ce_weight < 0:
      raise ValueError("--encoder_ce_weight must not be negative.")
    super().__init__(config)
    self.encoder = self.decoder = None

  def _finish_init(self, latent_channels):
    self.coder = entropy.build_coder(self.config.entropy_model,
                                     latent_channels)
    self.classifier = LatentMLP(self.config.classifier,
                                self.config.num_classes)

  @property
  def has_decoder(self):
    return True

  def loss_term_names(self):
    return self.METRIC_NAMES

  def encode(self, images, training=False):
    """The coded latent: the posterior mean in quantization steps."""
    mean, _ = self.encoder(images, training=training)
    return mean / self.config.quantization_step

  def classify(self, latent_hat, training=False):
    return self.classifier(latent_hat * self.config.quantization_step,
                           training=training)

  def _pixel_logits(self, latent, training):
    return self.decoder(latent, training=training)

  def reconstruct(self, latent_hat, training=False):
    return tf.sigmoid(self._pixel_logits(
        latent_hat * self.config.quantization_step, training))

  def call(self, images, training=False):
    """Outputs and loss terms; the decoder reads a sample in training."""
    mean, log_variance = self.encoder(images, training=training)
    step = self.config.quantization_step
    latent = mean / step
    latent_hat, bits = self.coder(
        scale_gradient(latent, self.config.lmbda), training=training)
    # The classifier reads latent_hat exactly; its gradient reaches the
    # encoder straight through the rounding, scaled by encoder_ce_weight.
    classifier_input = tf.stop_gradient(latent_hat) + (
        self.config.encoder_ce_weight * (latent - tf.stop_gradient(latent)))
    if training:
      sample = mean + tf.exp(.5 * log_variance) * tf.random.normal(
          tf.shape(mean))
    else:
      sample = tf.stop_gradient(latent_hat) * step
    pixel_logits = self._pixel_logits(sample, training)
    x_hat = tf.sigmoid(pixel_logits)
    image_axes = (1, 2, 3)
    return {
        "latent_hat": latent_hat,
        "logits": self.classify(classifier_input, training=training),
        "bits": bits,
        "bpp": bits / self.num_pixels,
        "x_hat": x_hat,
        "mse": tf.reduce_mean(tf.math.squared_difference(images, x_hat),
                              axis=image_axes),
        "recon": tf.reduce_sum(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=images, logits=pixel_logits), axis=image_axes),
        "kl": gaussian_kl(mean, log_variance),
    }

  def loss_terms(self, outputs, labels):
    """recon + β·KL (nats per image) + bits per image + CE, batch means.

    The rate enters with weight 1: its gradient reaches the encoder scaled
    by `lmbda` (see `call`) and trains the prior in full. CE trains the
    classifier, and reaches the encoder scaled by `encoder_ce_weight`.
    """
    ce = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        labels, outputs["logits"], from_logits=True))
    terms = {name: tf.reduce_mean(outputs[name])
             for name in ("bpp", "recon", "kl", "mse")}
    loss = (terms["recon"] + self.config.beta * terms["kl"] + ce
            + terms["bpp"] * self.num_pixels)
    return {"loss": loss, "ce": ce, **terms}
