"""The contract every model kind honours, and the training step they share.

A kind supplies `encode` (image -> latent), `classify` (decoded latent ->
logits), a `coder` from `tfvaeclf.coders` and, optionally, `reconstruct`.
Everything else — the forward pass that returns outputs and loss terms, the
train/test steps, `compress`/`decompress` — is written once here, so
evaluation, the codec and export work for every kind alike.

The forward pass (`call`) is one template: encode, code, reconstruct (with
a decoder), classify. A kind whose training pass differs from its inference
path changes a step through a hook, never by rewriting `call` (only the
uncompressed `classifier`, which codes nothing, has its own):

    encoder_outputs(images)    the latent to code, and what else the loss
                               needs from the encoder (a VAE's posterior,
                               a split model's uncut logits)
    coder_input(latent)        what the coder reads (a VAE scales the
                               rate's gradient to the encoder)
    decoder_outputs(...)       x_hat, and its extra terms (a VAE decodes a
                               posterior sample in training)
    training_logits(outputs)   the logits (a VAE's straight-through
                               classifier input; rdc classifies x_hat)

and weighs the outputs in its own `loss_terms` (`tfvaeclf.losses`).

A kind also names its `PRETRAINED_PARTS`: the sub-models a second training
stage takes from a finished model dir and keeps fixed (`--freeze_encoder_from`,
see `model_dir.restore_pretrained`), e.g. a classifier retrained on a frozen
encoder; and its `BACKBONE`, a classifier whose trained weights the trainer
loads into it (`load_backbone`, which `model_dir.restore_backbone` calls):
constructors build the architecture and read no files.

What the experiments need to know of a kind, the kind says too:
`CONV_LAYERS_FIELD`, the config field of its encoder's conv widths whose
depth a search varies (`with_conv_layers`), and `split_point_table`, where
a kind cut from a backbone can be cut (`train --list_split_points`).
"""

import dataclasses

import tensorflow as tf

from tfvaeclf import coders, losses

__all__ = ["CompressiveClassifier", "BaseConfig", "setting",
           "entropy_model_setting"]


def setting(default, help, *, flag=None, old_flag=None, choices=None):
  """A config field that the command line sets: `--flag` (default: the
  field's name), explained by `help`, one of `choices` if given.

  `old_flag` is a deprecated name of it, still accepted for this kind.
  A field declared without `setting` is not a flag of the kind, so a kind
  declares (or redeclares) here every field it reads from the command line.
  """
  return dataclasses.field(default=default, metadata={
      "help": help, "flag": flag, "old_flag": old_flag, "choices": choices})


@dataclasses.dataclass
class BaseConfig:
  """Fields every kind has; kinds extend it with their own.

  The dataset sets the first two. The others are flags only of the kinds
  that redeclare them with `setting`.
  """
  image_shape: tuple = (28, 28, 1)
  num_classes: int = 10
  entropy_model: str = "factorized"
  lmbda: float = 1.0   # weight of the rate, in bits per pixel
  gamma: float = 0.0   # weight of the reconstruction MSE (decoder only)


def entropy_model_setting():
  """`--entropy_model`, for the kinds that let it choose their coder."""
  return setting("factorized", "How the latent is priced and range-coded.",
                 choices=coders.CODER_NAMES)


class CompressiveClassifier(tf.keras.Model):
  """Encoder -> quantized, range-coded latent -> classifier (-> decoder)."""

  Config = BaseConfig
  registered_name = None  # set by `registry.register`
  # Attribute names of what a second stage keeps fixed; the coder always.
  PRETRAINED_PARTS = ("coder",)
  # Attribute name of a backbone that starts from trained weights, which
  # `load_backbone` sets; None: the kind has none.
  BACKBONE = None
  # The config field of the encoder's conv widths, one a layer, whose depth
  # a search varies (`conv_layers=n`, see `with_conv_layers`); None: a
  # search does not vary the kind's depth.
  CONV_LAYERS_FIELD = None
  # Where a kind cut from a backbone can be cut: its config -> the table
  # `train --list_split_points` prints. None: the kind is not cut.
  split_point_table = None
  # Every loss term any configuration of the kind reports, for its trackers.
  METRIC_NAMES = ("loss", "ce", "bpp", "mse")

  def __init__(self, config):
    super().__init__(name=self.registered_name)
    self.config = config
    self.num_pixels = float(config.image_shape[0] * config.image_shape[1])
    self.coder = None  # set by the subclass
    self._trackers = {name: tf.keras.metrics.Mean(name=name)
                      for name in self.METRIC_NAMES}
    self._accuracy = tf.keras.metrics.SparseCategoricalAccuracy(
        name="accuracy")

  # -- what a kind provides -------------------------------------------------

  def encode(self, images, training=False):
    raise NotImplementedError

  def classify(self, latent_hat, training=False):
    raise NotImplementedError

  @property
  def has_decoder(self):
    return False

  def reconstruct(self, latent_hat, training=False):
    raise NotImplementedError(f"Model {self.name!r} has no decoder.")

  # -- shared ---------------------------------------------------------------

  def call(self, images, training=False):
    """Forward pass on float images in [0, 1]: outputs and rate terms."""
    outputs = self.encoder_outputs(images, training)
    latent_hat, bits = self.coder(self.coder_input(outputs["latent"]),
                                  training=training)
    outputs.update(latent_hat=latent_hat, bits=bits,
                   bpp=bits / self.num_pixels)
    if self.has_decoder:
      outputs.update(self.decoder_outputs(images, outputs, training))
      outputs["mse"] = losses.mse(images, outputs["x_hat"])
    outputs["logits"] = self.training_logits(outputs, training)
    return outputs

  # -- hooks of `call`; the defaults are the inference path -----------------

  def encoder_outputs(self, images, training):
    """{"latent": what is coded, ...what the loss reads of the encoder}."""
    return {"latent": self.encode(images, training=training)}

  def coder_input(self, latent):
    return latent

  def decoder_outputs(self, images, outputs, training):
    """{"x_hat": the reconstruction, ...terms of the decoder's loss}."""
    return {"x_hat": self.reconstruct(outputs["latent_hat"],
                                      training=training)}

  def training_logits(self, outputs, training):
    """The logits of the training pass, from the outputs before them."""
    return self.classify(outputs["latent_hat"], training=training)

  # -- shared ---------------------------------------------------------------

  def loss_terms(self, outputs, labels):
    """The objective: CE + lmbda * bpp (+ gamma * MSE), batch means."""
    ce = tf.reduce_mean(losses.cross_entropy(labels, outputs["logits"]))
    bpp = tf.reduce_mean(outputs["bpp"])
    mse = tf.reduce_mean(outputs["mse"]) if "mse" in outputs else 0.
    loss = ce + self.config.lmbda * bpp + self.config.gamma * mse
    return {"loss": loss, "ce": ce, "bpp": bpp, "mse": mse}

  def _update_metrics(self, terms, labels, logits):
    for tracker in self.metrics[:-1]:
      tracker.update_state(terms[tracker.name])
    self._accuracy.update_state(labels, logits)
    return {m.name: m.result() for m in self.metrics}

  def train_step(self, data):
    images, labels = data
    with tf.GradientTape() as tape:
      outputs = self(images, training=True)
      terms = self.loss_terms(outputs, labels)
      # Under a tf.distribute strategy apply_gradients sums the replicas'
      # gradients (Keras scales only compiled losses), so each replica
      # contributes its share of the global batch's mean.
      share = terms["loss"] / self.distribute_strategy.num_replicas_in_sync
    variables = self.trainable_variables
    gradients = tape.gradient(share, variables)
    self.optimizer.apply_gradients(zip(gradients, variables))
    return self._update_metrics(terms, labels, outputs["logits"])

  def test_step(self, data):
    images, labels = data
    outputs = self(images, training=False)
    terms = self.loss_terms(outputs, labels)
    return self._update_metrics(terms, labels, outputs["logits"])

  def loss_term_names(self):
    """The terms `loss_terms` returns for this configuration."""
    return ("loss", "ce", "bpp", *(("mse",) if self.has_decoder else ()))

  @property
  def metrics(self):
    """Loss terms, then accuracy last."""
    return [*(self._trackers[name] for name in self.loss_term_names()),
            self._accuracy]

  def load_backbone(self, source=None):
    """Sets the trained weights its `BACKBONE` starts training from (the
    kinds with one take `classifier.load_backbone`); a kind without a
    backbone has none to load."""

  @classmethod
  def with_conv_layers(cls, config, n):
    """`config` with `n` encoder conv layers: the first n widths of its
    `CONV_LAYERS_FIELD`, or all of them with the last one repeated."""
    widths = list(getattr(config, cls.CONV_LAYERS_FIELD))
    return dataclasses.replace(config, **{
        cls.CONV_LAYERS_FIELD: tuple(
            widths[:n] + widths[-1:] * (n - len(widths)))})

  def pretrained_parts(self):
    """{name: what a second stage restores and keeps fixed}: each of
    `PRETRAINED_PARTS`, or, for a part that names its own (a coder of which
    only the hyper-latent is taken), {its part's name: that part}."""
    parts = {}
    for name in self.PRETRAINED_PARTS:
      part = getattr(self, name)
      inner = getattr(part, "PRETRAINED_PARTS", None)
      parts[name] = ({n: getattr(part, n) for n in inner} if inner
                     else part)
    return parts

  def freeze_pretrained(self):
    """Stops training `pretrained_parts()` (batch norm in them, too)."""
    for part in self.pretrained_parts().values():
      for layer in (part.values() if isinstance(part, dict) else [part]):
        layer.trainable = False

  def build_from_config(self):
    """Creates all variables with one dummy forward pass."""
    self(tf.zeros((1, *self.config.image_shape)), training=False)

  @property
  def dither_seed(self):
    """The seed of a dithered coder's shared dither (what its files carry
    in their header), else None."""
    return self.coder.dither_seed

  @property
  def latent_shape(self):
    """Spatial shape of the latent of one image (what files must carry)."""
    latent = self.encode(tf.zeros((1, *self.config.image_shape)))
    return tuple(latent.shape[1:-1])

  def compress(self, images, **coder_options):
    """Float images -> (tuple of per-image string tensors, latent shape).

    The latent shape is the spatial shape the decoder needs, as in
    CompressAI's `compress() -> {strings, shape}`. `coder_options` go to
    the coder (a dithered coder's `seed` and `first_index`).
    """
    latent = self.encode(images, training=False)
    strings = self.coder.compress(latent, **coder_options)
    return strings, tf.shape(latent)[1:-1]

  def decompress(self, strings, latent_shape, **coder_options):
    """Strings from `compress` -> the quantized latent, bit for bit."""
    return self.coder.decompress(strings, latent_shape, **coder_options)
