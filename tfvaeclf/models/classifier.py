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
the backbone's weights when training starts; a trained model dir takes its
weights from its checkpoint and never reads that file again.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import backbones
from tfvaeclf.models import base
from tfvaeclf.models.registry import register

__all__ = ["ClassifierConfig", "FrozenBackboneConfig", "ImageClassifier",
           "pretrained_backbone"]


@dataclasses.dataclass
class ClassifierConfig(base.BaseConfig):
  lmbda: float = 0.  # nothing is coded: no rate to weigh
  backbone: str = base.setting(
      "small_resnet", "The backbone: small_resnet or resnet50.")
  backbone_weights: str = base.setting(
      None, "A Keras .h5 weights file for the backbone, read at the start "
      "only.")
  # Named `filters` in config.json since the first model dirs.
  filters: tuple = base.setting(
      (16, 32, 64), "Stage widths of a small_resnet backbone.",
      flag="backbone_widths", old_flag="filters")


@dataclasses.dataclass
class FrozenBackboneConfig(base.BaseConfig):
  """The fields of kinds built on a finished classifier's backbone."""
  backbone: str = base.setting(
      "small_resnet", "The backbone: small_resnet or resnet50.")
  backbone_widths: tuple = base.setting(
      (16, 32, 64), "Stage widths of a small_resnet backbone.")
  backbone_from: str = base.setting(
      None, "A finished classifier model dir whose backbone is copied and "
      "kept frozen (match --backbone and --backbone_widths to it).")


@register("classifier")
class ImageClassifier(base.CompressiveClassifier):
  """Images -> logits with a backbone; uncompressed (`coder` is None)."""

  Config = ClassifierConfig
  PRETRAINED_PARTS = ()
  METRIC_NAMES = ("loss", "ce")
  # Fields that only initialize training; a model rebuilt from its dir
  # leaves them unset (see model_dir.build_model).
  INITIALIZER_FIELDS = ("backbone_weights",)

  def __init__(self, config):
    super().__init__(config)
    options = ({"widths": tuple(config.filters)}
               if config.backbone == "small_resnet" else {})
    self.backbone = backbones.build(
        config.backbone, config.image_shape, config.num_classes,
        weights=config.backbone_weights, **options)

  def encode(self, images, training=False):
    """Nothing to encode: the image is what the server receives."""
    return images

  def classify(self, images, training=False):
    return self.backbone(images, training=training)

  def call(self, images, training=False):
    return {"logits": self.classify(images, training=training)}

  def loss_terms(self, outputs, labels):
    ce = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(
        labels, outputs["logits"], from_logits=True))
    return {"loss": ce, "ce": ce}

  def loss_term_names(self):
    return self.METRIC_NAMES

  def compress(self, images):
    raise NotImplementedError(f"{self.name} is uncompressed: no coder")

  def decompress(self, strings, latent_shape):
    raise NotImplementedError(f"{self.name} is uncompressed: no coder")


def pretrained_backbone(name, widths, image_shape, num_classes,
                        source_dir=None, weights=None):
  """A frozen backbone for kinds built on a trained classifier.

  The universal RDC kind judges reconstructions with it; the split kind
  cuts it in two. `source_dir` is a finished `classifier` model dir whose
  backbone weights are copied: its backbone, widths, image shape and
  classes must be these, or ValueError says in one line which differ.
  `weights` is a Keras .h5 file instead (ImageNet's, for ResNet-50).
  Neither: random weights, as a model rebuilt from its own dir has before
  its checkpoint is restored.
  """
  from tfvaeclf import model_dir  # a model dir holds models: import late
  options = {"widths": tuple(widths)} if name == "small_resnet" else {}
  backbone = backbones.build(name, image_shape, num_classes, weights=weights,
                             **options)
  if source_dir:
    try:
      source = model_dir.load_classifier(source_dir)
    except model_dir.ModelDirError as e:
      raise ValueError(str(e)) from None
    have = source.config["model_config"]
    want = {"backbone": name, "image_shape": list(image_shape),
            "num_classes": num_classes}
    if name == "small_resnet":
      want["filters"] = list(widths)
    different = [f"{key} {have[key]} (not {value})"
                 for key, value in want.items() if have[key] != value]
    if different:
      raise ValueError(f"the classifier in {source_dir} has "
                       f"{', '.join(different)}; set the backbone flags "
                       "to match it")
    backbone.set_weights(source.model.backbone.get_weights())
  backbone.trainable = False
  return backbone
