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

The conditional coders (hyperprior, channel context) code a hyper-latent `z`
with a `FactorizedCoder` and the latent `y` with a logistic whose location
`mu` and scale come from `z` (and from the channel slices decoded before).
`y` is quantized to `round(y - mu) + mu`: the residual is what the range
coder sees, so `mu` must be reproduced bit for bit on both sides, which it is
because the decoder runs the same layers on the same integers.

Bytes from outside are decoded by `decode`, which runs the project's own
range decoder (`tfvaeclf.coding.latent_decoder`, `tfvaeclf.coding.native`): its work
is bounded whatever the bytes, where TFC's decode ops can run for minutes on
a crafted string. It returns what `decompress` (TFC's ops, kept as the
reference in tests) returns, bit for bit.
"""

import itertools

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tfvaeclf.coding import dither, latent_decoder, range_coder
from tfvaeclf.errors import BitstreamError

__all__ = ["FactorizedCoder", "HyperpriorCoder", "ChannelContextCoder",
           "DitheredCoder", "build_coder", "CODER_NAMES"]


class _Coder(tf.keras.layers.Layer):
  """What every coder shares: coding needs frozen tables."""

  def _require_frozen(self):
    if not self.frozen:
      raise RuntimeError(
          "The coder has no coding tables yet: call freeze() after training "
          "or load_tables() from a model dir.")


class FactorizedCoder(_Coder):
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
    self.channel_tables = None  # parsed for `latent_decoder`, when frozen

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
    self.channel_tables = latent_decoder.channel_tables(tables)
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

  def decode(self, strings, spatial_shape):
    """`decompress` by the project's bounded decoder, for bytes from
    outside: the same tensor, or BitstreamError (one line)."""
    self._require_frozen()
    (latent_strings,) = strings
    return tf.constant(latent_decoder.decode_factorized(
        latent_strings, self.channel_tables, spatial_shape))


class ChannelContextCoder(_Coder):
  """Hyperprior with a channel-wise autoregressive context (Minnen & Singh).

  `y` is split into `num_slices` groups of channels; each slice's location
  and scale index are predicted from the hyper features and the slices
  decoded before it. Decoding loops over slices, not pixels, so it stays
  fast. The hyper-latent `z` is a stride-2 convolution of `y`: its spatial
  shape is `ceil(latent shape / 2)`, and the hyper-synthesis output is
  cropped back to the latent's.

  Two strings per image: `z`, then every slice of `y` in one string. The
  range coder's handle is passed from slice to slice, so the decoder resumes
  mid-string after predicting the next slice's parameters; a string per
  slice would pay the coder's final bytes once per slice.
  """

  def __init__(self, channels, num_slices=4, hyper_channels=None,
               num_scales=64, scale_bounds=(.11, 256.),
               range_coder_precision=16, **kwargs):
    super().__init__(**kwargs)
    self.channels = int(channels)
    if not 1 <= num_slices <= self.channels:
      raise ValueError(
          f"num_slices must be in [1, {self.channels}], got {num_slices}")
    self.slice_sizes = [len(s) for s in np.array_split(
        np.arange(self.channels), num_slices)]
    self.coding_rank = 3
    self.range_coder_precision = int(range_coder_precision)
    hyper_channels = hyper_channels or max(4, self.channels // 2)
    self.hyper_analysis = tf.keras.Sequential([
        tf.keras.layers.Conv2D(self.channels, 3, padding="same",
                               activation="relu"),
        tf.keras.layers.Conv2D(hyper_channels, 3, strides=2, padding="same"),
    ], name="hyper_analysis")
    self.hyper_coder = FactorizedCoder(hyper_channels, name="hyper_coder")
    self.hyper_synthesis = tf.keras.Sequential([
        tf.keras.layers.Conv2DTranspose(self.channels, 3, strides=2,
                                        padding="same", activation="relu"),
        tf.keras.layers.Conv2D(self.channels, 3, padding="same"),
    ], name="hyper_synthesis")
    # Per slice: (hyper features, decoded slices) -> (loc, scale index).
    self.slice_transforms = [
        tf.keras.Sequential([
            tf.keras.layers.Conv2D(self.channels, 3, padding="same",
                                   activation="relu"),
            tf.keras.layers.Conv2D(2 * size, 1),
        ], name=f"slice_{k}")
        for k, size in enumerate(self.slice_sizes)]
    self.num_scales = int(num_scales)
    low, high = (float(np.log(b)) for b in scale_bounds)
    step = (high - low) / (self.num_scales - 1)
    self._scale_fn = lambda index: tf.exp(low + step * index)
    self._training_model = self._indexed_model(compression=False)
    self._cdf = self._cdf_offset = self._index_tables = None

  def _indexed_model(self, **kwargs):
    # Logistic, not normal: its log-probability is a far smaller graph, and
    # tracing the training step is most of a short run's time.
    return tfc.LocationScaleIndexedEntropyModel(
        tfc.NoisyLogistic, self.num_scales, self._scale_fn,
        coding_rank=self.coding_rank, **kwargs)

  @property
  def num_streams(self):
    """Strings per image: the hyper-latent, then the latent."""
    return 2

  @property
  def frozen(self):
    return self._cdf is not None

  def call(self, latent, training=False):
    """Returns `(latent_hat, bits)`, as `FactorizedCoder.call`.

    `latent_hat` is `round(y - mu) + mu`, what `decompress` returns, with a
    straight-through gradient; `bits` is bits(z) + bits(y | z).
    """
    z_hat, z_bits = self.hyper_coder(self.hyper_analysis(latent),
                                     training=training)
    slices = tf.split(latent, self.slice_sizes, axis=-1)
    latent_hat, loc, index = self._decode_slices(
        z_hat, tf.shape(latent)[1:3],
        lambda k, loc, index: tfc.round_st(slices[k], loc), training)
    # One call for all slices: a prior per slice makes a graph so large
    # that tracing the training step takes tens of seconds.
    _, y_bits = self._training_model(latent, index, loc=loc,
                                     training=training)
    return latent_hat, z_bits + y_bits

  def _decode_slices(self, z_hat, spatial_shape, code_slice, training=False):
    """The slice loop that training, encoder and decoder share.

    `code_slice(k, loc, index)` codes slice `k` and returns it quantized.
    Outside training the scale index is an integer, as the tables need.
    Returns the quantized latent, its locations and its scale indexes.
    """
    features = self.hyper_features(z_hat, spatial_shape, training)
    decoded, locs, indexes = [], [], []
    for k in range(len(self.slice_sizes)):
      loc, index = self.slice_parameters(k, features, decoded, training)
      if not training:
        index = tf.clip_by_value(tf.round(index), 0., self.num_scales - 1.)
      decoded.append(code_slice(k, loc, index))
      locs.append(loc)
      indexes.append(index)
    return tf.concat(decoded, -1), tf.concat(locs, -1), tf.concat(indexes, -1)

  def hyper_features(self, z_hat, spatial_shape, training=False):
    """The hyper-synthesis of `z_hat`, cropped to the latent's spatial
    shape: what every slice's parameters are predicted from."""
    features = self.hyper_synthesis(z_hat, training=training)
    return features[:, :spatial_shape[0], :spatial_shape[1], :]

  def slice_parameters(self, k, features, decoded, training=False):
    """`(loc, index)` of slice `k` from the hyper features and the slices
    decoded before it (a list); the index unrounded, as predicted."""
    params = self.slice_transforms[k](tf.concat([features, *decoded], -1),
                                      training=training)
    return tf.split(params, 2, axis=-1)

  def slice_symbols(self, latent, z_hat):
    """What `compress` range-codes, given the coded hyper-latent `z_hat`:
    `(symbols, indexes)`, int32 (batch, values per image) in coding order,
    slice after slice, each in C order (an edge encoder's graph)."""
    slices = tf.split(latent, self.slice_sizes, axis=-1)
    symbols, indexes = [], []

    def code_slice(k, loc, index):
      rounded = tf.round(slices[k] - loc)
      for coded, values in ((symbols, rounded), (indexes, index)):
        coded.append(tf.reshape(tf.cast(values, tf.int32),
                                [tf.shape(latent)[0], -1]))
      return rounded + loc

    self._decode_slices(z_hat, latent.shape[1:3], code_slice)
    return tf.concat(symbols, 1), tf.concat(indexes, 1)

  def freeze(self):
    """Freezes the hyper prior and the logistic tables, in graphs."""
    self.hyper_coder.freeze()

    @tf.function
    def build_tables():
      model = self._indexed_model(
          compression=True, stateless=True,
          range_coder_precision=self.range_coder_precision)
      return model.cdf, model.cdf_offset

    self._set_latent_tables(*(t.numpy() for t in build_tables()))

  def tables(self):
    """Flat-keyed numpy tables, as `np.savez` stores them."""
    self._require_frozen()
    hyper = self.hyper_coder.tables()
    return {"hyper/cdf": hyper["cdf"], "hyper/cdf_offset": hyper["cdf_offset"],
            "latent/cdf": self._cdf.numpy(),
            "latent/cdf_offset": self._cdf_offset.numpy()}

  def load_tables(self, tables):
    self.hyper_coder.load_tables(
        {k: tables[f"hyper/{k}"] for k in ("cdf", "cdf_offset")})
    self._set_latent_tables(np.asarray(tables["latent/cdf"]),
                            np.asarray(tables["latent/cdf_offset"]))

  def _set_latent_tables(self, cdf, cdf_offset):
    """TFC's tables, and the same parsed for `decode`."""
    self._cdf = tf.constant(cdf, tf.int32)
    self._cdf_offset = tf.constant(cdf_offset, tf.int32)
    self._index_tables = range_coder.CdfTables(cdf, cdf_offset)

  def compress(self, latent):
    """Latent (batch, H, W, channels) -> (z strings, y strings)."""
    self._require_frozen()
    z = self.hyper_analysis(latent)
    (z_strings,) = self.hyper_coder.compress(z)
    slices = tf.split(latent, self.slice_sizes, axis=-1)
    handle = tfc.create_range_encoder(tf.shape(latent)[:1], self._cdf)

    def code_slice(k, loc, index):
      nonlocal handle
      index = tf.cast(index, tf.int32)
      symbols = tf.cast(tf.round(slices[k] - loc), tf.int32)
      handle = tfc.entropy_encode_index(
          handle, index, symbols - tf.gather(self._cdf_offset, index))
      return tf.cast(symbols, latent.dtype) + loc

    self._decode_slices(tf.round(z), tf.shape(latent)[1:3], code_slice)
    return z_strings, tfc.entropy_encode_finalize(handle)

  def decompress(self, strings, spatial_shape):
    """Inverse of `compress`: returns `round(y - mu) + mu`."""
    self._require_frozen()
    z_strings, y_strings = strings
    spatial_shape = tf.cast(spatial_shape, tf.int32)
    z_hat = self.hyper_coder.decompress((z_strings,), (spatial_shape + 1) // 2)
    handle = tfc.create_range_decoder(y_strings, self._cdf)

    def code_slice(k, loc, index):
      nonlocal handle
      index = tf.cast(index, tf.int32)
      shape = tf.concat([spatial_shape, [self.slice_sizes[k]]], 0)
      handle, symbols = tfc.entropy_decode_index(
          handle, index, shape, tf.int32)
      symbols += tf.gather(self._cdf_offset, index)
      return tf.cast(symbols, loc.dtype) + loc

    latent_hat, _, _ = self._decode_slices(z_hat, spatial_shape, code_slice)
    complete = tfc.entropy_decode_finalize(handle)
    with tf.control_dependencies([tf.debugging.assert_equal(
        complete, True, message="latent string does not decode")]):
      return tf.identity(latent_hat)

  def decode(self, strings, spatial_shape):
    """`decompress` by the project's bounded decoder, for bytes from
    outside: the same tensor, or BitstreamError (one line).

    Runs eagerly: the slice loop predicts each slice's tables, then decodes
    its symbols, each image's decoder resuming where the last slice ended.
    """
    self._require_frozen()
    z_strings, y_strings = strings
    spatial_shape = np.asarray(spatial_shape, np.int64).tolist()
    z_hat = latent_decoder.decode_factorized(
        z_strings, self.hyper_coder.channel_tables,
        [(d + 1) // 2 for d in spatial_shape], stream="hyper")
    key = next(_stream_keys)
    _open_streams[key] = latent_decoder.IndexedStreams(
        y_strings, self._index_tables)
    try:
      latent_hat = self._decode_traced(
          tf.constant(z_hat), tf.constant(spatial_shape, tf.int32),
          tf.constant(key, tf.int64))
      if key in _slice_errors:
        raise _slice_errors[key]
      _open_streams[key].finish()
    finally:
      del _open_streams[key]
      _slice_errors.pop(key, None)
    return latent_hat

  @tf.function(reduce_retracing=True)
  def _decode_traced(self, z_hat, spatial_shape, key):
    """The slice loop of `decode` in a graph (eagerly it takes longer than
    the range decoding); the symbols come from the open streams `key`."""
    def code_slice(k, loc, index):
      del k  # each image's decoder resumes where the slice before ended
      index = tf.cast(index, tf.int32)
      symbols = tf.numpy_function(_decode_slice, [key, index], tf.int32,
                                  stateful=True)
      symbols.set_shape(index.shape)
      return tf.cast(symbols, loc.dtype) + loc

    latent_hat, _, _ = self._decode_slices(z_hat, spatial_shape, code_slice)
    return latent_hat


# The indexed streams that `ChannelContextCoder.decode` calls are decoding,
# and their errors, by the key their traced slice loop is given.
_open_streams, _slice_errors = {}, {}
_stream_keys = itertools.count()


def _decode_slice(key, index):
  """The next slice of the open streams `key`; zeros after an error, which
  is kept for `decode` to raise (raised here, it would leave the graph as
  TensorFlow's error)."""
  key = int(key)
  if key not in _slice_errors:
    try:
      return _open_streams[key].decode(index)
    except BitstreamError as e:
      _slice_errors[key] = e
  return np.zeros(index.shape, np.int32)


class HyperpriorCoder(ChannelContextCoder):
  """Scale-and-mean hyperprior (Ballé et al. 2018, Minnen et al. 2018).

  The one-slice case of the channel-context coder: every channel's location
  and scale come from the hyper-latent alone.
  """

  def __init__(self, channels, **kwargs):
    super().__init__(channels, num_slices=1, **kwargs)


class DitheredCoder(_Coder):
  """Universal (dithered) fixed-rate quantization to `levels` levels.

  The latent `y`, which the kind bounds to [0, levels - 1], is sent as the
  symbols `m = round(y + u)`, each one of `levels` values, and decoded as
  `y_hat = m - u`, the dither `u` shared by both ends (`tfvaeclf.coding.dither`):
  drawn afresh at every training step, computed from `seed` and each
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
  def num_streams(self):
    return self.symbol_coder.num_streams

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


CODER_NAMES = ("factorized", "hyperprior", "context")


def build_coder(name, channels, coding_rank=3):
  """The coder called `name` (the `--entropy_model` flag)."""
  if name == "factorized":
    return FactorizedCoder(channels, coding_rank=coding_rank)
  if name in ("hyperprior", "context") and coding_rank != 3:
    raise ValueError(f"The {name} coder codes 2-D latents (coding_rank 3).")
  if name == "hyperprior":
    return HyperpriorCoder(channels)
  if name == "context":  # a slice per channel when there are fewer than 4
    return ChannelContextCoder(channels, num_slices=min(4, channels))
  raise ValueError(f"Unknown entropy model {name!r}; choose one of "
                   f"{', '.join(CODER_NAMES)}.")
