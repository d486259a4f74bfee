"""The coders' registry, and what every coder provides.

A coder is a Keras layer that quantizes a latent, prices it in bits while
training and range-codes it once frozen. Beyond that, it describes how its
latent travels, so that the exporter, the board and the server need not
know it:

    stream_plan(latent_shape)   its typed streams (`tfvaeclf.coding.streams`)
                                with the frozen tables: the manifest's
                                "streams" and tables.npz
    edge_outputs(latent)        {stream name: what the board quantizes}:
                                the TF side of the board half, which the
                                edge encoder's graph outputs
    board_functions(shape)      {bundle file: tf.function} the board runs
                                after the encoder (an indexed stream's
                                slice coder), converted to float32 TFLite
    board_code(shape)           {name: figures} of what the board runs
                                after the encoder as the project's own C
                                (an integer slice predictor): its budget
    server_functions(shape)     {signature name: tf.function} the server's
                                SavedModel holds for the server half (an
                                indexed stream's predictors)

`register(name)` files a builder `(channels, coding_rank) -> coder` under
the `--entropy_model` name `name`; `build_coder` calls it.
"""

import tensorflow as tf

__all__ = ["Coder", "build_coder", "coder_names", "register"]

_BUILDERS = {}


def register(name):
  """Decorator: files the builder `(channels, coding_rank) -> coder` it
  decorates under `name`."""
  def decorate(builder):
    if name in _BUILDERS:
      raise ValueError(f"a coder named {name!r} is registered already")
    _BUILDERS[name] = builder
    return builder
  return decorate


def coder_names():
  """The registered names, in registration order."""
  return tuple(_BUILDERS)


def build_coder(name, channels, coding_rank=3):
  """The coder called `name` (the `--entropy_model` flag)."""
  if name not in _BUILDERS:
    raise ValueError(f"Unknown entropy model {name!r}; choose one of "
                     f"{', '.join(_BUILDERS)}.")
  return _BUILDERS[name](channels, coding_rank)


class Coder(tf.keras.layers.Layer):
  """What every coder shares: coding needs frozen tables; a coder with no
  model of its own on the board or the server provides none."""

  # The sub-layers a second stage (`--freeze_encoder_from`) takes from a
  # finished model's coder and keeps fixed; empty: the whole coder.
  PRETRAINED_PARTS = ()

  def _require_frozen(self):
    if not self.frozen:
      raise RuntimeError(
          "The coder has no coding tables yet: call freeze() after training "
          "or load_tables() from a model dir.")

  @property
  def dither_seed(self):
    """The default seed of a dithered coder's shared dither, else None."""
    return None

  def stream_plan(self, latent_shape):
    """[typed streams] of a latent of spatial shape `latent_shape`."""
    raise NotImplementedError

  def edge_outputs(self, latent):
    """{stream name: the float latent the board quantizes for it}."""
    raise NotImplementedError

  def board_functions(self, latent_shape, batch_size=None):
    """{bundle file: tf.function} the board runs after the encoder."""
    del latent_shape, batch_size
    return {}

  def board_code(self, latent_shape):
    """{name: {"dtype", "bytes", "parameters", "macs", ...}} of the C the
    board runs after the encoder, for one image."""
    del latent_shape
    return {}

  def server_functions(self, latent_shape):
    """{signature name: tf.function} the server's half runs."""
    del latent_shape
    return {}
