"""The grouped-convolution VAE compressor's transforms, V1 and V2.

The encoder's groups grow toward the latent: as the resolution falls and
the channels rise, a convolution looks more like a dense layer, and a group
only looks at the features its parent group found (the seed's "a cat's ears,
not an airplane's wingspan"). Its last row is built twice, as separate mean
and log-variance heads. The decoder mirrors the encoder with grouped
transposed convolutions.

Each version is one table of encoder rows; the decoder is derived from it,
so V1 and V2 share every line of code. Output shapes and parameter counts
are exactly the seed's Tables 1-4 (136,827 and 24,075 parameters) for
32x32x3 images; with one channel only the first and last rows shrink.

Registered as the model kind `grouped_vae` (`--version=v1|v2`): a VAE
compressor trained as the seed says (noise before the heads, a sample in
training, the quantized mean coded at test; see `vae.VariationalClassifier`),
with a latent classifier riding along that never touches the compressor.
"""

import dataclasses

import tensorflow as tf

from tfvaeclf.layers import GroupedConv2D, GroupedConv2DTranspose
from tfvaeclf.models import base, vae
from tfvaeclf.models.registry import register

__all__ = ["Row", "TABLES", "GroupedEncoder", "GroupedDecoder", "grouped_vae",
           "GroupedVAEConfig", "GroupedVAECompressor"]

# Between rows. ELU, not ReLU: a V1 group sees only 3 channels, and a group
# whose ReLUs all die would silence its whole subtree of the hierarchy.
ACTIVATION = "elu"


@dataclasses.dataclass(frozen=True)
class Row:
  """One encoder row of the seed's tables: Filter `groups*filters(c*k*k+1)`.

  Each of `groups` groups has `filters` filters over its own contiguous
  slice of `c` input channels, with a `kernel` x `kernel` window moving by
  `stride` over the input padded with `pad` zeros on each side. The decoder
  row mirroring it is the transposed convolution of the same geometry,
  which crops `pad` instead.
  """
  groups: int
  filters: int
  kernel: int
  stride: int
  pad: int

  @property
  def channels(self):
    return self.groups * self.filters


# Shapes are H x W x C; params are per row (a head counts once).
#
# V1: the seed's Stride and Pad columns (1 and 2) are wrong: a 4x4 kernel at
# stride 1 with pad 2 makes 33x33 of 32x32, and its decoder 1x1 of 2x2. The
# Output column halves the size every row, which for a 4x4 kernel only
# stride 2 with pad 1 gives (Keras' "same" at stride 2, too). Params agree.
# V2: stride and pad as printed; the 9x9 of row 2 needs its pad of 2, which
# no Keras padding gives (hence explicit padding and cropping throughout).
# The decoders are these rows mirrored (V1: 37,056 + 9,264 + 2,316 + 579;
# V2: 5,800 + 1,932 + 1,299). Every row divides evenly,
# (H + 2 pad - kernel) % stride == 0, so each mirror restores its row's input
# size exactly.
TABLES = {
    "v1": (
        Row(1, 12, 4, 2, 1),   # 32x32x3 -> 16x16x12,        588
        Row(4, 12, 4, 2, 1),   # -> 8x8x48,                 2,352
        Row(16, 12, 4, 2, 1),  # -> 4x4x192,                9,408
        Row(64, 12, 4, 2, 1),  # heads -> 2x2x768,   2 x 37,632
    ),
    "v2": (
        Row(1, 12, 6, 2, 2),   # 32x32x3 -> 16x16x12,      1,308
        Row(4, 10, 4, 2, 2),   # -> 9x9x40,                 1,960
        Row(8, 16, 3, 2, 1),   # heads -> 5x5x128,    2 x 5,888
    ),
}


def _conv(row, activation, name):
  return tf.keras.Sequential([
      tf.keras.layers.ZeroPadding2D(row.pad),
      GroupedConv2D(row.channels, row.kernel, row.stride,
                    groups=row.groups, activation=activation),
  ], name=name)


def _transposed_conv(row, filters, activation, name):
  return tf.keras.Sequential([
      GroupedConv2DTranspose(filters, row.kernel, row.stride,
                             groups=row.groups, activation=activation),
      tf.keras.layers.Cropping2D(row.pad),
  ], name=name)


class GroupedEncoder(tf.keras.layers.Layer):
  """Image -> (mean, log-variance) of the latent, both linear.

  With `noise`, uniform noise in [-1/2, 1/2) is added in training to the
  feature the heads read (the grouped VAE paper, section 4): the heads learn to tolerate
  the quantization the coded latent will see. Whether to sample the latent
  or take the mean is the model's choice.
  """

  def __init__(self, rows, noise=True, name="grouped_encoder"):
    super().__init__(name=name)
    *trunk, head = rows
    self.trunk = tf.keras.Sequential(
        [_conv(row, ACTIVATION, f"row{i + 1}") for i, row in enumerate(trunk)],
        name="trunk")
    self.mean = _conv(head, None, "mean")
    self.log_variance = _conv(head, None, "log_variance")
    self.noise = noise
    self.latent_channels = head.channels

  def call(self, images, training=None):
    features = self.trunk(images, training=training)
    if training and self.noise:
      features += tf.random.uniform(tf.shape(features), -.5, .5)
    return self.mean(features), self.log_variance(features)


class GroupedDecoder(tf.keras.Sequential):
  """Latent -> image: the encoder's rows in reverse, transposed.

  Each row's mirror maps the row's output channels back to its input
  channels in the same groups, restoring the shape the row took in. The last
  layer is linear: clipping to the pixel range is the model's business.
  """

  def __init__(self, rows, image_channels=3, name="grouped_decoder"):
    super().__init__(name=name)
    inputs = (image_channels, *(row.channels for row in rows[:-1]))
    for i in reversed(range(len(rows))):
      self.add(_transposed_conv(rows[i], inputs[i],
                                ACTIVATION if i else None, f"mirror{i + 1}"))


def grouped_vae(version, image_channels=3, noise=True):
  """The seed's V1 or V2 as `(GroupedEncoder, GroupedDecoder)`."""
  if version not in TABLES:
    raise ValueError(f"Unknown version {version!r}; "
                     f"choose from {sorted(TABLES)}.")
  rows = TABLES[version]
  return (GroupedEncoder(rows, noise=noise),
          GroupedDecoder(rows, image_channels=image_channels))


@dataclasses.dataclass
class GroupedVAEConfig(vae.VAEConfig):
  image_shape: tuple = (32, 32, 3)
  version: str = base.setting("v1", "The seed's table.", choices=("v1", "v2"))
  beta: float = base.setting(  # a plain VAE: the seed adds no KL weight
      1., "Weight of the KL divergence: 1 is a plain VAE, 0 an "
      "autoencoder.")


@register("grouped_vae")
class GroupedVAECompressor(vae.VariationalClassifier):
  """The grouped-convolution VAE as a codec with a latent classifier."""

  Config = GroupedVAEConfig

  def __init__(self, config):
    if tuple(config.image_shape[:2]) != (32, 32):
      raise ValueError(
          f"grouped_vae's tables are for 32x32 images, not "
          f"{config.image_shape[0]}x{config.image_shape[1]}; "
          "pass --image_size=32")
    super().__init__(config)
    self.encoder, self.decoder = grouped_vae(
        config.version, image_channels=config.image_shape[-1])
    self._finish_init(self.encoder.latent_channels)
