"""Entropy models: how a latent is quantized, priced in bits and range-coded.

Every model kind codes its latent through a coder from this module, so the
quantizer the classifier trains on is, by construction, the one the decoder
reproduces. Coders quantize to integers (no offset heuristic): TFC's heuristic
shifts decoded values to `round(y - o) + o`, and a classifier trained on
`round(y)` then fails on what the decoder returns; the heuristic is also an
iterative tail search that would run at every training step.

A coder has two lives. While training it owns a learned prior and prices the
latent with additive uniform noise (a differentiable upper bound on the rate).
`freeze()` then turns the prior into integer CDF tables; those tables are the
artifact that is saved (`tables()`/`load_tables()`) and shipped, so encoder
and decoder can never disagree by recomputing them.
"""

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

__all__ = ["FactorizedCoder", "build_coder", "CODER_NAMES"]


class FactorizedCoder(tf.keras.layers.Layer):
  """One learned `NoisyDeepFactorized` density per latent channel.

  The latent of one image (all `coding_rank` innermost axes) becomes one
  range-coded string.
  """

  def __init__(self, channels, coding_rank=3, range_coder_precision=16,
               **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    self.coding_rank = int(coding_rank)
    self.range_coder_precision = int(range_coder_precision)
    self.prior = tfc.NoisyDeepFactorized(batch_shape=[self.channels])
    self._training_model = tfc.ContinuousBatchedEntropyModel(
        self.prior, coding_rank=self.coding_rank, compression=False,
        offset_heuristic=False)
    self._coding_model = None

  @property
  def num_streams(self):
    """Strings per image: one for the latent."""
    return 1

  @property
  def frozen(self):
    return self._coding_model is not None

  def call(self, latent, training=False):
    """Returns `(latent_hat, bits)`.

    `latent_hat` is exactly what `decompress` will return (rounded, with a
    straight-through gradient), so it is what a classifier must see. `bits`
    is the rate per image: noisy upper bound in training, the information
    content of `latent_hat` otherwise.
    """
    latent_hat = tfc.round_st(latent)
    _, bits = self._training_model(latent, training=training)
    return latent_hat, bits

  def freeze(self):
    """Fixes the prior into integer CDF tables for range coding.

    The tables are computed in a graph: TFC's tail search is a loop that
    takes many seconds when run eagerly.
    """
    @tf.function
    def build_tables():
      model = tfc.ContinuousBatchedEntropyModel(
          self.prior, coding_rank=self.coding_rank, compression=True,
          stateless=True, range_coder_precision=self.range_coder_precision,
          offset_heuristic=False)
      return {"cdf": model.cdf, "cdf_offset": model.cdf_offset}

    self.load_tables({k: v.numpy() for k, v in build_tables().items()})

  def tables(self):
    """The frozen coding tables as numpy arrays (what gets shipped)."""
    self._require_frozen()
    return {"cdf": self._coding_model.cdf.numpy(),
            "cdf_offset": self._coding_model.cdf_offset.numpy()}

  def load_tables(self, tables):
    """Rebuilds the coding model from saved tables, without the prior."""
    self._coding_model = tfc.ContinuousBatchedEntropyModel(
        prior_shape=[self.channels], coding_rank=self.coding_rank,
        compression=True, offset_heuristic=False,
        cdf=tf.constant(np.asarray(tables["cdf"]), tf.int32),
        cdf_offset=tf.constant(np.asarray(tables["cdf_offset"]), tf.int32))

  def compress(self, latent):
    """Latent (batch, *spatial, channels) -> tuple of one string per image."""
    self._require_frozen()
    return (self._coding_model.compress(latent),)

  def decompress(self, strings, spatial_shape):
    """Inverse of `compress`: returns the quantized latent."""
    self._require_frozen()
    (latent_strings,) = strings
    return self._coding_model.decompress(latent_strings, spatial_shape)

  def _require_frozen(self):
    if not self.frozen:
      raise RuntimeError(
          "The coder has no coding tables yet: call freeze() after training "
          "or load_tables() from a model dir.")


CODER_NAMES = ("factorized",)


def build_coder(name, channels, coding_rank=3):
  """The coder called `name` (the `--entropy_model` flag)."""
  if name == "factorized":
    return FactorizedCoder(channels, coding_rank=coding_rank)
  raise ValueError(
      f"Unknown entropy model {name!r}; choose one of {', '.join(CODER_NAMES)}.")
