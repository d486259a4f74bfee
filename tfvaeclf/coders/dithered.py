"""The dithered coder: universal fixed-rate quantization.

Not an `--entropy_model` choice: the kinds that quantize universally (rdc)
build it themselves.
"""

import numpy as np
import tensorflow as tf

from tfvaeclf.coders import registry
from tfvaeclf.coders.factorized import FactorizedCoder
from tfvaeclf.coding import dither, latent_decoder

__all__ = ["DitheredCoder"]


class DitheredCoder(registry.Coder):
  """Universal (dithered) fixed-rate quantization to `levels` levels.

  The latent `y`, which the kind bounds to [0, levels - 1], is sent as the
  symbols `m = round(y + u)`, each one of `levels` values, and decoded as
  `y_hat = m - u`, the dither `u` shared by both ends
  (`tfvaeclf.coding.dither`): drawn afresh at every training step, computed from `seed` and each
  image's position in its batch (or file) otherwise. Either way `y_hat - y`
  is uniform on [-1/2, 1/2), so training sees the error of test time.

  The rate is fixed: `fixed_bits` = dim * log2(levels) per image. The
  symbols are also range-coded under a factorized prior that learns from
  them but never shapes the encoder (it sees them stopped), which gives the
  real, usually smaller, rate of the same symbols: `bits`, and the strings.
  """

  def __init__(self, latent_shape, levels, seed=0, **kwargs):
    super().__init__(**kwargs)
    if levels < 2:
      raise ValueError(f"--levels must be at least 2, not {levels}")
    if not 0 <= seed <= dither.MAX_SEED:
      raise ValueError(f"--dither_seed must be in [0, {dither.MAX_SEED}]")
    self.latent_shape = tuple(int(d) for d in latent_shape)
    self.levels, self.seed = int(levels), int(seed)
    self.symbol_coder = FactorizedCoder(
        self.latent_shape[-1], coding_rank=len(self.latent_shape),
        name="symbol_coder")

  @property
  def dither_seed(self):
    return self.seed

  @property
  def frozen(self):
    return self.symbol_coder.frozen

  @property
  def fixed_bits(self):
    """R = dim * log2(levels): what a fixed-rate code spends per image."""
    return float(np.prod(self.latent_shape) * np.log2(self.levels))

  def _dither(self, batch_size, seed, first_index=0):
    return dither.tf_dither(self.seed if seed is None else seed, batch_size,
                            self.latent_shape, first_index)

  def _symbols(self, latent, u):
    # y in [0, L-1] and u in [-1/2, 1/2) round into range already; the clip
    # only guards against an encoder that overshoots by float error.
    return tf.clip_by_value(tf.round(latent + u), 0., self.levels - 1.)

  def call(self, latent, training=False):
    """Returns `(y_hat, bits)`: `m - u` with a straight-through gradient,
    and the information content of `m` under the prior (noisy bound in
    training)."""
    if training:
      u = tf.random.uniform(tf.shape(latent), -.5, .5)
    else:
      u = self._dither(tf.shape(latent)[0], None)
    symbols = self._symbols(latent, u)
    latent_hat = latent + tf.stop_gradient(symbols - u - latent)
    _, bits = self.symbol_coder(tf.stop_gradient(symbols), training=training)
    return latent_hat, bits

  def freeze(self):
    self.symbol_coder.freeze()

  def tables(self):
    return self.symbol_coder.tables()

  def load_tables(self, tables):
    self.symbol_coder.load_tables(tables)

  def stream_plan(self, latent_shape):
    """The symbol coder's one channel stream, with the dither the board
    adds before rounding (its encoder still outputs y)."""
    return [self.symbol_coder.channel_stream(
        "latent", latent_shape,
        dither={"seed": self.seed, "levels": self.levels})]

  def edge_outputs(self, latent):
    return {"latent": latent}

  def compress(self, latent, seed=None, first_index=0):
    """Latent -> (one string per image,): its symbols under dither `seed`
    (default: the model's), image i of the batch taking dither index
    `first_index + i`."""
    u = self._dither(tf.shape(latent)[0], seed, first_index)
    return self.symbol_coder.compress(self._symbols(latent, u))

  def decompress(self, strings, spatial_shape, seed=None, first_index=0):
    """Inverse of `compress` with the same `seed` and `first_index`:
    returns `m - u`."""
    symbols = self.symbol_coder.decompress(strings, spatial_shape)
    return symbols - self._dither(tf.shape(symbols)[0], seed, first_index)

  def decode(self, strings, spatial_shape, seed=None, dither_indices=None):
    """`decompress` by the project's bounded decoder, for bytes from
    outside: the same tensor, or BitstreamError (one line).
    Image i takes dither `dither_indices[i]` (default: i, as in a file)."""
    self._require_frozen()
    (symbol_strings,) = strings
    return tf.constant(latent_decoder.decode_dithered(
        symbol_strings, self.symbol_coder.channel_tables, spatial_shape,
        self.seed if seed is None else seed, dither_indices))
