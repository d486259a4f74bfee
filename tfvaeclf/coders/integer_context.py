"""The channel-context coder with an integer slice predictor.

The float coder's board and server must predict every latent element's
table bit for bit alike from float32 layers; on another runtime's kernels
they can differ, and an image then decodes to garbage with no error. Here
the hyper-synthesis and the slice transforms are `IntegerConv2D` layers,
trained through their rounding, whose integers the board, a microcontroller
and the server run in C (`coding.slice_predictor`, numpy where C cannot
build), and every one of them picks the same tables. The encoder and the
factorized hyper-latent are the float coder's.
"""

import functools

import numpy as np
import tensorflow as tf

from tfvaeclf.coders import registry
from tfvaeclf.coders.context import ChannelContextCoder, _check_rank
from tfvaeclf.coding import latent_decoder, slice_predictor, streams
from tfvaeclf.integer_layers import IntegerConv2D

__all__ = ["IntegerContextCoder"]

# Starting output scales: hyper features near +-30 from a hyper-latent of a
# few units, locations in 1/64 units, scale indexes near a third of the
# tables (a scale near 1). The divisors and biases then train.
_HYPER_GAIN_DIVISOR = 16.
_OUTPUT_DIVISOR = 32.


def _float_coder_scale(index):
  """The float coder's scale of table `index` (its log-spaced scales)."""
  low, high = np.log(ChannelContextCoder.SCALE_BOUNDS)
  return float(np.exp(low + index * (high - low)
                      / (ChannelContextCoder.NUM_SCALES - 1)))


def _to_inputs_st(values):
  """What `slice_predictor.to_inputs` makes of decoded values, with a
  straight-through gradient."""
  values = values * slice_predictor.INPUT_UNITS
  rounded = tf.clip_by_value(tf.floor(values + 0.5),
                             *map(float, slice_predictor.INPUT_LIMITS))
  return values + tf.stop_gradient(rounded - values)


class IntegerContextCoder(ChannelContextCoder):
  """`ChannelContextCoder` whose slice predictor is an integer network.

  Slice k's location is `loc_q / 64` and its scale index an integer, both
  computed by integer layers from the hyper-latent and the slices decoded
  before (their values in quarters, rounded half up into [-128, 127]); the
  latent is
  `round(y - loc) + loc`, as the float coder's. The predictor's integers
  travel in the bundle's tables (`slice_predictor.IntegerSlicePredictor`),
  so the board runs no TFLite model after the encoder and the server no
  signature for it.

  A second stage (`--freeze_encoder_from`) takes a float context model's
  encoder and hyper-latent unchanged and trains this predictor on them:
  the same encoder, the same hyper-latent bytes.
  """

  PRETRAINED_PARTS = ("hyper_analysis", "hyper_coder")
  # The float coder's scales up to about 15 (its first 41 tables, spaced as
  # its 64): a microcontroller's flash holds their 16-bit CDFs in 3.5 KB, not
  # the 56 KB of scales up to 256, which latents of a few units never pick
  # (an integer predictor trained on MNIST picks 0-9). A value beyond a
  # table's range still codes, as an escape.
  NUM_SCALES = 41
  SCALE_BOUNDS = (ChannelContextCoder.SCALE_BOUNDS[0],
                  _float_coder_scale(NUM_SCALES - 1))

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    # `decode`'s stream plan by latent shape, built once: its predictor's
    # integers taken from the layers and its tables parsed once, not per
    # payload. A cache outside Keras' tracking, as the parent's.
    self._decode_plan_of = functools.lru_cache(maxsize=None)(
        self.stream_plan)

  def _hyper_synthesis(self):
    return tf.keras.Sequential([
        IntegerConv2D(self.channels, 3, strides=2, transpose=True, low=0,
                      divisor_init=_HYPER_GAIN_DIVISOR),
        IntegerConv2D(self.channels, 3),
    ], name="hyper_synthesis")

  def _slice_transform(self, k, size):
    start_index = self.num_scales // 3
    return tf.keras.Sequential([
        IntegerConv2D(self.channels, 3, low=0),
        IntegerConv2D(2 * size, 1, low=slice_predictor.LOC_LIMITS[0],
                      high=slice_predictor.LOC_LIMITS[1],
                      divisor_init=_OUTPUT_DIVISOR,
                      bias_init=[0.] * size
                      + [start_index * _OUTPUT_DIVISOR] * size),
    ], name=f"slice_{k}")

  def hyper_features(self, z_hat, spatial_shape, training=False):
    return super().hyper_features(
        tf.clip_by_value(z_hat, *map(float, slice_predictor.INPUT_LIMITS)),
        spatial_shape, training)

  def slice_parameters(self, k, features, decoded, training=False):
    """`(loc, index)` of slice `k`: `loc_q / 64`, and the integer index,
    which coding clips to the tables (`_decode_slices`, as the integer
    predictor does) and training does not, as the float coder's: clipped,
    an index that wants a scale below the smallest table would keep
    drifting down."""
    params = self.slice_transforms[k](
        tf.concat([features, *map(_to_inputs_st, decoded)], -1),
        training=training)
    loc_q, index = tf.split(params, 2, axis=-1)
    return loc_q / slice_predictor.LOC_UNITS, index

  def symbols(self, latent, loc):
    """round(y - loc) by the board's integer rule
    (`slice_predictor.symbols`: y in 1/65536, halves up), so that the
    model, the board and a microcontroller code the same symbols."""
    units = tf.clip_by_value(
        tf.round(tf.cast(latent, tf.float64) * slice_predictor.LATENT_UNITS),
        1. - slice_predictor.LATENT_LIMIT, slice_predictor.LATENT_LIMIT - 1.)
    units -= tf.cast(loc, tf.float64) * slice_predictor.LATENT_UNITS
    return tf.cast(tf.floor((units + slice_predictor.LATENT_UNITS // 2)
                            / slice_predictor.LATENT_UNITS), latent.dtype)

  def predictor(self, native_layers=True):
    """The trained integer predictor, for the runtimes without TF."""
    def weights(sequential):
      return [layer.integer_weights() for layer in sequential.layers]

    return slice_predictor.IntegerSlicePredictor(
        weights(self.hyper_synthesis),
        [weights(t) for t in self.slice_transforms], self.slice_sizes,
        self.num_scales, native_layers=native_layers)

  def stream_plan(self, latent_shape):
    """The hyper-latent, then the latent as an "indexed_integer" stream
    that carries the predictor's integers."""
    hyper, latent = super().stream_plan(latent_shape)
    return [hyper, streams.IntegerIndexedStream(
        latent.name, latent.shape, latent.cdf, latent.cdf_offset,
        latent.coding_rank, latent.precision, role=latent.role,
        on=latent.on, slices=latent.slices, num_scales=latent.num_scales,
        predictor=self.predictor())]

  def board_functions(self, latent_shape, batch_size=None):
    """None: the board runs the integer predictor of the tables."""
    del latent_shape, batch_size
    return {}

  def board_code(self, latent_shape):
    """The integer predictor, which the board runs in C."""
    return {"slice_predictor": self.predictor().figures(latent_shape)}

  def server_functions(self, latent_shape):
    """None: the server runs the integer predictor of the tables."""
    del latent_shape
    return {}

  def decode(self, strings, spatial_shape):
    """`decompress` by the bounded decoder and the integer predictor, as
    the server decodes: the same tensor, or BitstreamError (one line)."""
    self._require_frozen()
    z_strings, y_strings = strings
    hyper, latent = self._decode_plan_of(
        tuple(np.asarray(spatial_shape, np.int64).tolist()))
    z_hat = latent_decoder.decode_factorized(
        z_strings, self.hyper_coder.channel_tables, hyper.shape[:-1],
        stream=hyper.name)
    values, failures = latent.decode(y_strings, {hyper.name: z_hat})
    latent_decoder.raise_failures(failures)
    return tf.constant(values)


@registry.register("integer_context")
def _build(channels, coding_rank):
  """A slice per channel when there are fewer than 4, as "context"."""
  _check_rank("integer_context", coding_rank)
  return IntegerContextCoder(channels, num_slices=min(4, channels))
