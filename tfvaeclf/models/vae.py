"""What the VAE kinds (the grouped-convolution VAE, the β-VAE latent classifiers) share.

A VAE encoder gives the mean and log-variance of a Gaussian posterior. In
training the decoder reads a sample of it and the loss is the β-VAE's:
reconstruction (Bernoulli, summed over pixels) + β·KL(posterior || N(0, I)).
What is coded is the mean, divided by `quantization_step` and rounded by the
kind's coder; the classifier and, at test time, the decoder read that
decoded mean times the step, exactly what a file reproduces.

By default the VAE is trained for reconstruction, not for the task: the
classifier's gradient stops at the latent (the β-VAE paper trains classifiers on a
pretrained, frozen VAE), and the rate shapes the encoder only as much as
`lmbda` says. `encoder_ce_weight` > 0 lets that share of the classifier's
gradient reach the encoder, as the VAE-classifier paper trains: the
latent then keeps what the labels need, not only what the pixels need.
`lmbda=0` gives a pure β-VAE whose prior is fitted to it after the fact, in
the same step. A second stage (`--freeze_encoder_from`) then trains a new
classifier head on the frozen VAE.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import coders, losses
from tfvaeclf.models import base

__all__ = ["VAEConfig", "VariationalClassifier", "LatentMLP",
           "CLASSIFIER_HEADS", "scale_gradient"]


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
      "is the β-VAE paper's unsupervised VAE.")


def scale_gradient(x, factor):
  """`x` forward; its gradient multiplied by `factor` backward."""
  return factor * x + (1. - factor) * tf.stop_gradient(x)


class LatentMLP(tf.keras.Sequential):
  """Decoded latent -> class logits: the β-VAE paper's classifier heads.

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
    self.coder = coders.build_coder(self.config.entropy_model,
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

  # -- the training pass (`base.call`'s hooks) -------------------------------

  def encoder_outputs(self, images, training):
    """The coded latent, the posterior and its KL from the prior."""
    mean, log_variance = self.encoder(images, training=training)
    return {"latent": mean / self.config.quantization_step, "mean": mean,
            "log_variance": log_variance,
            "kl": losses.gaussian_kl(mean, log_variance)}

  def coder_input(self, latent):
    """The latent, its rate's gradient to the encoder scaled by `lmbda`."""
    return scale_gradient(latent, self.config.lmbda)

  def decoder_outputs(self, images, outputs, training):
    """x_hat and `recon`: the decoder reads a posterior sample in training,
    the decoded latent at test."""
    if training:
      sample = outputs["mean"] + tf.exp(
          .5 * outputs["log_variance"]) * tf.random.normal(
              tf.shape(outputs["mean"]))
    else:
      sample = (tf.stop_gradient(outputs["latent_hat"])
                * self.config.quantization_step)
    pixel_logits = self._pixel_logits(sample, training)
    return {"x_hat": tf.sigmoid(pixel_logits),
            "recon": losses.bernoulli_nll(images, pixel_logits)}

  def training_logits(self, outputs, training):
    """The classifier reads latent_hat exactly; its gradient reaches the
    encoder straight through the rounding, scaled by encoder_ce_weight."""
    latent = outputs["latent"]
    classifier_input = tf.stop_gradient(outputs["latent_hat"]) + (
        self.config.encoder_ce_weight * (latent - tf.stop_gradient(latent)))
    return self.classify(classifier_input, training=training)

  def loss_terms(self, outputs, labels):
    """recon + β·KL (nats per image) + bits per image + CE, batch means.

    The rate enters with weight 1: its gradient reaches the encoder scaled
    by `lmbda` (see `coder_input`) and trains the prior in full. CE trains
    the classifier, and reaches the encoder scaled by `encoder_ce_weight`.
    """
    ce = tf.reduce_mean(losses.cross_entropy(labels, outputs["logits"]))
    terms = {name: tf.reduce_mean(outputs[name])
             for name in ("bpp", "recon", "kl", "mse")}
    loss = (terms["recon"] + self.config.beta * terms["kl"] + ce
            + terms["bpp"] * self.num_pixels)
    return {"loss": loss, "ce": ce, **terms}
