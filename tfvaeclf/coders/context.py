"""The conditional coders: hyperprior, and hyperprior with channel context.

They code a hyper-latent `z` with a `FactorizedCoder` and the latent `y`
with a logistic whose location `mu` and scale come from `z` (and from the
channel slices decoded before). `y` is quantized to `round(y - mu) + mu`:
the residual is what the range coder sees, so `mu` must be reproduced bit
for bit on both sides, which it is because the decoder runs the same layers
on the same integers.

Their stream plan: the hyper-latent, a channel stream, then the latent, an
indexed stream conditional on it. The board runs the slice coder
(`board_functions`), the server the predictors (`server_functions`).
"""

import functools

import numpy as np
import tensorflow as tf
import tensorflow_compression as tfc

from tfvaeclf.coders import registry
from tfvaeclf.coders.factorized import FactorizedCoder
from tfvaeclf.coding import bundle, latent_decoder, range_coder, streams

__all__ = ["ChannelContextCoder", "HyperpriorCoder"]


class ChannelContextCoder(registry.Coder):
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

  # The scale tables: NUM_SCALES from SCALE_BOUNDS[0] to [1], evenly in
  # log scale.
  NUM_SCALES = 64
  SCALE_BOUNDS = (.11, 256.)

  def __init__(self, channels, num_slices=4, hyper_channels=None,
               num_scales=None, scale_bounds=None,
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
    self.num_scales = int(num_scales or self.NUM_SCALES)
    low, high = (float(np.log(b)) for b in scale_bounds or self.SCALE_BOUNDS)
    step = (high - low) / (self.num_scales - 1)
    self._scale_fn = lambda index: tf.exp(low + step * index)
    self.hyper_synthesis = self._hyper_synthesis()
    # Per slice: (hyper features, decoded slices) -> (loc, scale index).
    self.slice_transforms = [self._slice_transform(k, size)
                             for k, size in enumerate(self.slice_sizes)]
    self._training_model = self._indexed_model(compression=False)
    self._cdf = self._cdf_offset = self._index_tables = None
    # `server_functions` by latent shape, traced once: `decode` predicts
    # each slice's tables with the very functions the server's SavedModel
    # holds. A cache outside Keras' tracking (no checkpoint dependency).
    self._server_functions_of = functools.lru_cache(maxsize=None)(
        self.server_functions)

  def _hyper_synthesis(self):
    """z_hat -> features, at twice its rows and columns."""
    return tf.keras.Sequential([
        tf.keras.layers.Conv2DTranspose(self.channels, 3, strides=2,
                                        padding="same", activation="relu"),
        tf.keras.layers.Conv2D(self.channels, 3, padding="same"),
    ], name="hyper_synthesis")

  def _slice_transform(self, k, size):
    """(features, slices before k) -> slice k's (loc, index), stacked."""
    return tf.keras.Sequential([
        tf.keras.layers.Conv2D(self.channels, 3, padding="same",
                               activation="relu"),
        tf.keras.layers.Conv2D(2 * size, 1),
    ], name=f"slice_{k}")

  def _indexed_model(self, **kwargs):
    # Logistic, not normal: its log-probability is a far smaller graph, and
    # tracing the training step is most of a short run's time.
    return tfc.LocationScaleIndexedEntropyModel(
        tfc.NoisyLogistic, self.num_scales, self._scale_fn,
        coding_rank=self.coding_rank, **kwargs)

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
        lambda k, loc, index: self._quantize_st(slices[k], loc), training)
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

  def _quantize_st(self, latent, loc):
    """`symbols(latent, loc) + loc`, exactly the decoder's value, with a
    straight-through gradient to `latent` and none to `loc`, as
    `tfc.round_st` gives."""
    @tf.custom_gradient
    def quantize(latent, loc):
      return self.symbols(latent, loc) + loc, lambda grad: (grad, None)

    return quantize(latent, loc)

  def symbols(self, latent, loc):
    """What is coded of `latent` at the predicted `loc`: round(y - loc),
    as floats (half to even, as TensorFlow rounds)."""
    return tf.round(latent - loc)

  def slice_symbols(self, latent, z_hat):
    """What `compress` range-codes, given the coded hyper-latent `z_hat`:
    `(symbols, indexes)`, int32 (batch, values per image) in coding order,
    slice after slice, each in C order (an edge encoder's graph)."""
    slices = tf.split(latent, self.slice_sizes, axis=-1)
    symbols, indexes = [], []

    def code_slice(k, loc, index):
      rounded = self.symbols(slices[k], loc)
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
    """TFC's tables, and the same parsed for `decode`. Their number is the
    scale indexes' range: a model frozen with more scales than this class
    now builds codes as it did."""
    self.num_scales = len(cdf_offset)
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
      symbols = tf.cast(self.symbols(slices[k], loc), tf.int32)
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

    The hyper-latent, then the latent in the one slice loop
    (`latent_decoder.decode_slices`), each slice's tables predicted by the
    coder's server functions (graphs: eagerly the layers take longer than
    the range decoding), as the server predicts them with its SavedModel's.
    """
    self._require_frozen()
    z_strings, y_strings = strings
    spatial_shape = np.asarray(spatial_shape, np.int64).tolist()
    z_hat = latent_decoder.decode_factorized(
        z_strings, self.hyper_coder.channel_tables,
        [(d + 1) // 2 for d in spatial_shape], stream="hyper")
    functions = self._server_functions_of(tuple(spatial_shape))
    features = functions[bundle.HYPER_SYNTHESIS](
        tf.constant(z_hat))[bundle.FEATURES]

    def predict(k, decoded):
      inputs = {bundle.FEATURES: features}
      if decoded:
        inputs[bundle.DECODED] = tf.constant(np.concatenate(decoded, -1))
      outputs = functions[bundle.slice_model(k)](**inputs)
      return outputs[bundle.LOC].numpy(), outputs[bundle.INDEX].numpy()

    latent = latent_decoder.IndexedStreams(y_strings, self._index_tables)
    y_hat = latent_decoder.decode_slices(latent, len(self.slice_sizes),
                                         self.num_scales, predict)
    latent_decoder.raise_failures(latent.failures())
    return tf.constant(y_hat)

  def stream_plan(self, latent_shape):
    """The hyper-latent (a channel stream, side information), then the
    latent (an indexed stream on it, with the slice coder's file)."""
    latent_shape = [int(d) for d in latent_shape]
    z_shape = self.hyper_analysis(
        tf.zeros([1, *latent_shape, self.channels])).shape[1:-1]
    hyper = self.hyper_coder.channel_stream("hyper", z_shape,
                                            role=streams.SIDE)
    latent = streams.IndexedStream(
        "latent", [*latent_shape, self.channels], self._cdf.numpy(),
        self._cdf_offset.numpy(), self.coding_rank,
        self.range_coder_precision, role=streams.LATENT, on=hyper.name,
        slices=self.slice_sizes, num_scales=self.num_scales,
        model=bundle.SLICE_CODER)
    return [hyper, latent]

  def edge_outputs(self, latent):
    return {"hyper": self.hyper_analysis(latent), "latent": latent}

  def _specs(self, latent_shape, batch_size=None):
    """`spec(name, channels, shape=latent's)`: a float32 input of
    `batch_size` images (None: any), and the hyper-latent's."""
    latent_shape = [int(d) for d in latent_shape]
    z_shape = self.hyper_analysis(
        tf.zeros([1, *latent_shape, self.channels])).shape[1:]

    def spec(name, channels, shape=latent_shape):
      return tf.TensorSpec([batch_size, *shape, channels], tf.float32,
                           name=name)

    return spec, spec(bundle.HYPER_INPUT, z_shape[-1], z_shape[:-1])

  def board_functions(self, latent_shape, batch_size=None):
    """The board's half: the slice coder, `(z_hat, latent) -> {values,
    indexes}`, what `compress` range-codes. In float32 only: the scale
    index picks the range coder's table, so the board's must be the
    server's, which predicts it in float32 from the decoded slices; an int8
    predictor's indexes would differ from it now and then, and the decoder
    would lose its way."""
    spec, z_spec = self._specs(latent_shape, batch_size)

    @tf.function(input_signature=[z_spec, spec(bundle.LATENT_INPUT,
                                               self.channels)])
    def slice_coder(z_hat, latent):
      values, indexes = self.slice_symbols(latent, z_hat)
      return {bundle.VALUES: values, bundle.INDEXES: indexes}

    return {bundle.SLICE_CODER: slice_coder}

  def server_functions(self, latent_shape):
    """The decoder's half, as `tf.function`s with named inputs and outputs
    (`bundle.HYPER_SYNTHESIS`: z_hat -> features; `bundle.slice_model(k)`:
    features and the slices decoded before -> loc, index), which the server
    saves as signatures."""
    spec, z_spec = self._specs(latent_shape)
    latent_shape = [int(d) for d in latent_shape]

    @tf.function(input_signature=[z_spec])
    def hyper_synthesis(z_hat):
      return {bundle.FEATURES: self.hyper_features(z_hat, latent_shape)}

    def outputs(k, features, decoded):
      loc, index = self.slice_parameters(k, features, decoded)
      return {bundle.LOC: loc, bundle.INDEX: index}

    def slice_function(k):
      features_spec = spec(bundle.FEATURES, self.channels)
      if not k:
        return tf.function(lambda features: outputs(k, features, []),
                           input_signature=[features_spec])
      decoded_spec = spec(bundle.DECODED, sum(self.slice_sizes[:k]))
      return tf.function(
          lambda features, decoded: outputs(k, features, [decoded]),
          input_signature=[features_spec, decoded_spec])

    return {bundle.HYPER_SYNTHESIS: hyper_synthesis,
            **{bundle.slice_model(k): slice_function(k)
               for k in range(len(self.slice_sizes))}}


class HyperpriorCoder(ChannelContextCoder):
  """Scale-and-mean hyperprior (Ballé et al. 2018, Minnen et al. 2018).

  The one-slice case of the channel-context coder: every channel's location
  and scale come from the hyper-latent alone.
  """

  def __init__(self, channels, **kwargs):
    super().__init__(channels, num_slices=1, **kwargs)


def _check_rank(name, coding_rank):
  if coding_rank != 3:
    raise ValueError(f"The {name} coder codes 2-D latents (coding_rank 3).")


@registry.register("hyperprior")
def _build_hyperprior(channels, coding_rank):
  _check_rank("hyperprior", coding_rank)
  return HyperpriorCoder(channels)


@registry.register("context")
def _build_context(channels, coding_rank):
  """A slice per channel when there are fewer than 4."""
  _check_rank("context", coding_rank)
  return ChannelContextCoder(channels, num_slices=min(4, channels))
