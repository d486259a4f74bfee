"""A plain image classifier: the uncompressed reference, and a teacher.

The server receives the image itself, so there is no latent and no coder:
`coder` is None, `encode` is the identity and `classify` reads images
(float, in [0, 1]). Trained on cross-entropy alone, it gives the accuracy a
compressive model is measured against, the classifier that reads the
images classical codecs decode (tools/baselines.py), a frozen pretrained
classifier for other kinds, and the backbone a split DNN is cut from
(`tfvaeclf.backbones`).

What being coder-less means elsewhere:
  train     the normal path (--model=classifier); no coding tables are
            written, the fingerprint covers config and weights.
  model dir `model_dir.load` refuses it unless called with
            `allow_uncompressed=True` (evaluate, the baselines tool do), so
            the codec and export refuse it in one line.
  evaluate  accuracy and cross-entropy; the rate is the raw image, 8 bits
            per pixel and channel.

`backbone_weights` (a Keras .h5 file, see `backbones.load_weights`) sets
the backbone's weights when training starts (`load_backbone`, which the
trainer calls: the constructor reads no files); a trained model dir takes
its weights from its checkpoint and never reads that file again.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import backbones, losses
from tfvaeclf.models import base
from tfvaeclf.models.registry import register

__all__ = ["ClassifierConfig", "FrozenBackboneConfig", "ImageClassifier",
           "build_backbone", "load_backbone"]


@dataclasses.dataclass
class ClassifierConfig(base.BaseConfig):
  lmbda: float = 0.  # nothing is coded: no rate to weigh
  backbone: str = base.setting(
      "small_resnet", "The backbone: small_resnet, resnet8, resnet20, "
      "resnet9, plain_cnn or resnet50.")
  backbone_weights: str = base.setting(
      None, "A Keras .h5 weights file for the backbone, read at the start "
      "only.")
  # Named `filters` in config.json since the first model dirs.
  filters: tuple = base.setting(
      (16, 32, 64), "Stage widths of a small_resnet, resnet8, resnet20, "
      "resnet9 or plain_cnn backbone.",
      flag="backbone_widths", old_flag="filters")


@dataclasses.dataclass
class FrozenBackboneConfig(base.BaseConfig):
  """The fields of kinds built on a finished classifier's backbone."""
  backbone: str = base.setting(
      "small_resnet", "The backbone: small_resnet, resnet8, resnet20, "
      "resnet9, plain_cnn or resnet50.")
  backbone_widths: tuple = base.setting(
      (16, 32, 64), "Stage widths of a small_resnet, resnet8, resnet20, "
      "resnet9 or plain_cnn backbone.")
  backbone_from: str = base.setting(
      None, "A finished classifier model dir whose backbone is copied and "
      "kept frozen (match --backbone and --backbone_widths to it).")


def build_backbone(name, widths, image_shape, num_classes, trainable=True):
  """Backbone `name` (`widths`: the stage widths of a WIDTH_BACKBONES one)
  with random weights, until `load_backbone` or a checkpoint sets them.
  Kinds built on a trained classifier keep theirs frozen
  (`trainable=False`)."""
  options = ({"widths": tuple(widths)}
             if name in backbones.WIDTH_BACKBONES else {})
  backbone = backbones.build(name, image_shape, num_classes, **options)
  backbone.trainable = trainable
  return backbone


def load_backbone(model, source=None):
  """Sets the trained weights `model`'s backbone starts training from: the
  `load_backbone` method of every kind with a `BACKBONE` (this one, and
  those built on a classifier's backbone).

  The backbone is the attribute its kind names in `BACKBONE`. `source` is
  the finished classifier of the config's `backbone_from` dir (a
  `model_dir.LoadedModel`, read by `model_dir.restore_backbone`): its
  backbone, widths, image shape and classes must be the model's, or
  ValueError says in one line which differ. Without it, the config's
  `backbone_weights` .h5 file, if any, is read (ImageNet's, for ResNet-50).
  """
  backbone = getattr(model, model.BACKBONE)
  config = model.config
  if source is None:
    weights = getattr(config, "backbone_weights", None)
    if weights:
      backbones.load_weights(backbone, weights)
    return
  have = source.config["model_config"]
  want = {"backbone": config.backbone, "image_shape": list(config.image_shape),
          "num_classes": config.num_classes}
  if config.backbone in backbones.WIDTH_BACKBONES:
    want["filters"] = list(config.backbone_widths)
  different = [f"{key} {have[key]} (not {value})"
               for key, value in want.items() if have[key] != value]
  if different:
    raise ValueError(f"the classifier in {config.backbone_from} has "
                     f"{', '.join(different)}; set the backbone flags "
                     "to match it")
  backbone.set_weights(source.model.backbone.get_weights())


@register("classifier")
class ImageClassifier(base.CompressiveClassifier):
  """Images -> logits with a backbone; uncompressed (`coder` is None)."""

  Config = ClassifierConfig
  PRETRAINED_PARTS = ()
  BACKBONE = "backbone"
  load_backbone = load_backbone
  METRIC_NAMES = ("loss", "ce")

  def __init__(self, config):
    super().__init__(config)
    self.backbone = build_backbone(config.backbone, config.filters,
                                   config.image_shape, config.num_classes)

  def encode(self, images, training=False):
    """Nothing to encode: the image is what the server receives."""
    return images

  def classify(self, images, training=False):
    return self.backbone(images, training=training)

  def call(self, images, training=False):
    """Logits alone, not `base.call`'s template: every step after `encode`
    there is about the coded latent (coder, rate, decoder), and nothing is
    coded here."""
    return {"logits": self.classify(images, training=training)}

  def loss_terms(self, outputs, labels):
    ce = tf.reduce_mean(losses.cross_entropy(labels, outputs["logits"]))
    return {"loss": ce, "ce": ce}

  def loss_term_names(self):
    return self.METRIC_NAMES

  def compress(self, images):
    raise NotImplementedError(f"{self.name} is uncompressed: no coder")

  def decompress(self, strings, latent_shape):
    raise NotImplementedError(f"{self.name} is uncompressed: no coder")
