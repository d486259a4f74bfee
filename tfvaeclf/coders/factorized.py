"""The factorized coder: one learned density per latent channel."""

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tfvaeclf.coders import registry
from tfvaeclf.coding import latent_decoder, streams

__all__ = ["FactorizedCoder"]


class FactorizedCoder(registry.Coder):
  """One learned `NoisyDeepFactorized` density per latent channel.

  The latent of one image (all `coding_rank` innermost axes) becomes one
  range-coded string: one channel-table stream, "latent".
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
    self.channel_tables = None  # parsed for `latent_decoder`, when frozen

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
    self.channel_tables = latent_decoder.channel_tables(tables)
    self._coding_model = tfc.ContinuousBatchedEntropyModel(
        prior_shape=[self.channels], coding_rank=self.coding_rank,
        compression=True, offset_heuristic=False,
        cdf=tf.constant(np.asarray(tables["cdf"]), tf.int32),
        cdf_offset=tf.constant(np.asarray(tables["cdf_offset"]), tf.int32))

  def channel_stream(self, name, spatial_shape, **kwargs):
    """The channel-table stream `name` of these tables, for values of the
    spatial shape `spatial_shape` (kwargs: its dither, role)."""
    tables = self.tables()
    return streams.ChannelStream(
        name, [*spatial_shape, self.channels], tables["cdf"],
        tables["cdf_offset"], self.coding_rank, self.range_coder_precision,
        **kwargs)

  def stream_plan(self, latent_shape):
    return [self.channel_stream("latent", latent_shape)]

  def edge_outputs(self, latent):
    return {"latent": latent}

  def compress(self, latent):
    """Latent (batch, *spatial, channels) -> tuple of one string per image."""
    self._require_frozen()
    return (self._coding_model.compress(latent),)

  def decompress(self, strings, spatial_shape):
    """Inverse of `compress`: returns the quantized latent."""
    self._require_frozen()
    (latent_strings,) = strings
    return self._coding_model.decompress(latent_strings, spatial_shape)

  def decode(self, strings, spatial_shape):
    """`decompress` by the project's bounded decoder, for bytes from
    outside: the same tensor, or BitstreamError (one line)."""
    self._require_frozen()
    (latent_strings,) = strings
    return tf.constant(latent_decoder.decode_factorized(
        latent_strings, self.channel_tables, spatial_shape))


@registry.register("factorized")
def _build(channels, coding_rank):
  return FactorizedCoder(channels, coding_rank=coding_rank)
