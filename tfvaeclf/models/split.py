"""Split-DNN bottleneck units with a neural rate estimator (Ahuja et al.,
"Neural rate estimator and unsupervised learning for efficient distributed
image analytics in split-DNN models", CVPR 2023).

A trained classifier is cut in two at a split point (`backbones.split`):
the front runs on the edge device, the back on the server. A small
bottleneck unit is inserted at the cut. Its encoder, on the edge, shrinks
the front's features to `channels // compress_factor` channels; that latent
is quantized and range-coded under the learned entropy model of
`--entropy_model` (the neural rate estimator); its decoder, on the server,
restores the feature shape for the back. The backbone stays frozen (batch
norm included): only the bottleneck and the entropy model train, on
distortion + lmbda * bpp. So, under the contract of `base`:

    encode(images)      front, then the bottleneck encoder (the edge part)
    classify(latent)    the bottleneck decoder, then the back (the server)

and the file format, evaluate, the codec and export work unchanged.

Two training modes (`bottleneck_mode`):

    supervised    the task's cross-entropy on the labels;
    unsupervised  no labels: the KL divergence from the uncut network's
                  predictions, back(front(x)), to the split network's.

Why outputs, not features, for the unsupervised distortion: the back of a
classifier reads the features through a global average pool into a linear
head (all of it at S1), so a feature MSE spends rate on spatial detail and
on directions the head discards, while the KL divergence prices only what
changes the server's answer. The uncut predictions come from the same
frozen network, so the mode needs nothing but images (self-distillation).
Accuracy is still reported from the labels; it never reaches the loss.

The backbone's weights come from a finished `classifier` model dir
(`backbone_from`) or a Keras .h5 file (`backbone_weights`, e.g. ImageNet's
for ResNet-50), which the trainer reads at the start of training only
(`classifier.load_backbone`); the checkpoint holds them afterwards.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import backbones, coders, losses
from tfvaeclf.models import base, classifier
from tfvaeclf.models.classifier import FrozenBackboneConfig, build_backbone
from tfvaeclf.models.registry import register

__all__ = ["SplitConfig", "SplitClassifier", "MODES"]

MODES = ("supervised", "unsupervised")


@dataclasses.dataclass
class SplitConfig(FrozenBackboneConfig):
  entropy_model: str = base.entropy_model_setting()
  lmbda: float = base.setting(1.0, "Weight of the rate, in bits per pixel.")
  backbone_weights: str = base.setting(
      None, "A Keras .h5 weights file for the backbone, read at the start "
      "only.")
  split_point: str = base.setting(
      "S1", "Where the backbone is cut, S1, S2 or S3 (see "
      "--list_split_points).")
  compress_factor: int = base.setting(
      8, "Latent channels = feature channels // this.")
  bottleneck_mode: str = base.setting(
      "supervised", "Train on the labels, or without them on the uncut "
      "network's predictions.", choices=MODES)


class BottleneckEncoder(tf.keras.Sequential):
  """Features -> latent: a 1x1 ReLU conv to `hidden` channels, then a
  linear 3x3 conv to the latent's channels."""

  def __init__(self, hidden, latent_channels):
    super().__init__(name="bottleneck_encoder")
    self.add(tf.keras.layers.Conv2D(hidden, 1, activation="relu"))
    self.add(tf.keras.layers.Conv2D(latent_channels, 3, padding="same",
                                    name="latent"))


class BottleneckDecoder(tf.keras.Sequential):
  """Quantized latent -> features: a 3x3 ELU conv (ELU, as the joint kind's
  classifier, keeps a gradient where the latent rounds to zero), then a
  1x1 conv to the feature channels with ReLU, since every split point is
  a block output after its ReLU."""

  def __init__(self, hidden, channels):
    super().__init__(name="bottleneck_decoder")
    self.add(tf.keras.layers.Conv2D(hidden, 3, padding="same",
                                    activation="elu"))
    self.add(tf.keras.layers.Conv2D(channels, 1, activation="relu"))


@register("split")
class SplitClassifier(base.CompressiveClassifier):
  """A frozen backbone cut at a split point, a trained bottleneck between."""

  Config = SplitConfig
  # The edge part: a second stage keeps the bytes the board sends and
  # retrains only the server's decoder.
  PRETRAINED_PARTS = ("front", "bottleneck_encoder", "coder")
  BACKBONE = "backbone"
  load_backbone = classifier.load_backbone
  METRIC_NAMES = ("loss", "ce", "kl", "bpp")

  def __init__(self, config):
    if config.bottleneck_mode not in MODES:
      raise ValueError(f"Unknown bottleneck mode {config.bottleneck_mode!r};"
                       f" choose one of {', '.join(MODES)}.")
    super().__init__(config)
    self.backbone = build_backbone(
        config.backbone, config.backbone_widths, config.image_shape,
        config.num_classes, trainable=False)
    self.front, self.back = backbones.split(self.backbone,
                                            config.split_point)
    self.front.trainable = self.back.trainable = False
    channels = self.front.output.shape[-1]
    if not 1 <= config.compress_factor <= channels:
      raise ValueError(
          f"--compress_factor must be in [1, {channels}] (the channels at "
          f"{config.split_point}), not {config.compress_factor}")
    latent_channels = channels // config.compress_factor
    hidden = max(channels // 2, latent_channels)
    self.bottleneck_encoder = BottleneckEncoder(hidden, latent_channels)
    self.coder = coders.build_coder(config.entropy_model, latent_channels)
    self.bottleneck_decoder = BottleneckDecoder(hidden, channels)

  @property
  def supervised(self):
    return self.config.bottleneck_mode == "supervised"

  def encode(self, images, training=False):
    features = self.front(images, training=False)
    return self.bottleneck_encoder(features, training=training)

  def classify(self, latent_hat, training=False):
    features = self.bottleneck_decoder(latent_hat, training=training)
    return self.back(features, training=False)

  def encoder_outputs(self, images, training):
    """The latent, and the uncut network's logits when unsupervised (from
    the same features: the front runs once)."""
    features = self.front(images, training=False)
    outputs = {"latent": self.bottleneck_encoder(features, training=training)}
    if not self.supervised:
      outputs["uncut_logits"] = tf.stop_gradient(
          self.back(features, training=False))
    return outputs

  def loss_terms(self, outputs, labels):
    """Supervised: CE + lmbda * bpp. Unsupervised: KL(uncut || split) +
    lmbda * bpp, `labels` unread."""
    if self.supervised:
      return super().loss_terms(outputs, labels)
    kl = tf.reduce_mean(losses.softmax_kl(outputs["uncut_logits"],
                                          outputs["logits"]))
    bpp = tf.reduce_mean(outputs["bpp"])
    return {"loss": kl + self.config.lmbda * bpp, "kl": kl, "bpp": bpp}

  def loss_term_names(self):
    return ("loss", "ce" if self.supervised else "kl", "bpp")

  @staticmethod
  def split_point_table(config):
    """What `--list_split_points` prints: each split point of
    `config.backbone`, its layer and its feature shape for the config's
    images."""
    backbone = build_backbone(config.backbone, config.backbone_widths,
                              config.image_shape, config.num_classes)
    size = "x".join(str(d) for d in config.image_shape)
    lines = [f"split points of {config.backbone} for {size} images "
             "(point, layer, features):"]
    for point, layer in backbones.split_points(config.backbone).items():
      shape = tuple(backbone.get_layer(layer).output.shape[1:])
      lines.append(f"{point}  {layer:<18}  {'x'.join(map(str, shape))}")
    return "\n".join(lines)

