"""A conditional coder's slice predictor in integers, without TensorFlow.

The float32 predictor of `coders.ChannelContextCoder` picks each latent
element's range-coding table on the board and again on the server; a one-LSB
difference between two runtimes' kernels sends the decoder down another
table, and the image decodes to garbage with no error. This predictor
computes the same tables from integers alone, in `coding.int_layers`' one
rounding rule (C, or its numpy twin), so that every runtime that runs it
agrees bit for bit (Balle, Johnston and Minnen, ICLR 2019).
`coders.IntegerContextCoder` trains it; the stream type "indexed_integer"
(`coding.streams`) carries its weights in a bundle's tables.

What it computes, per image:

    hyper features  the hyper-latent z_hat (integers, clipped to [-128,
                    127]) through the hyper-synthesis layers, cropped to
                    the latent's rows and columns
    slice k         the features and the slices decoded before it (each
                    value in quarters, rounded half up, clipped to [-128,
                    127]: `to_inputs`) through slice k's layers -> out,
                    2 * size channels:
                    loc_q = out[..., :size]: the location in 1/64 units
                    (within [-2**15, 2**15) by the last layer's clip);
                    index = clip(out[..., size:], 0, num_scales - 1)

The latent is then `round(y - loc_q / 64) + loc_q / 64` on both sides,
the board rounding in integers (`symbols`) as a microcontroller can:
`csrc/slice_predictor.c` is this slice loop in C (`quantize` is its twin).
"""

import numpy as np

from tfvaeclf.coding import int_layers, native

__all__ = ["IntegerSlicePredictor", "LOC_UNITS", "LOC_LIMITS",
           "INPUT_UNITS", "INPUT_LIMITS", "LATENT_UNITS", "LATENT_LIMIT",
           "latent_units", "symbols", "to_inputs"]

LOC_UNITS = 64  # a location is loc_q / LOC_UNITS
# Decoded values feed the next slices in 1/INPUT_UNITS: integers would drop
# a location's fraction, and [-32, 32) still holds the latents' usual range.
INPUT_UNITS = 4
# The last layer's clip: locations in [-512, 512).
LOC_LIMITS = (-2**15, 2**15 - 1)
INPUT_LIMITS = (-128, 127)
# The board rounds y - loc in integers, y in 1/LATENT_UNITS: fine enough
# that only a tie within 2**-17 rounds otherwise than in float, and
# |units| < LATENT_LIMIT keeps every sum of the rule in int32.
LATENT_UNITS = 2**16
LATENT_LIMIT = 2**30
_FIELDS = ("kernel", "bias", "divisor", "config")  # config: stride,
# transpose, low, high


def to_inputs(values):
  """Decoded values (float32 `symbols + loc_q / 64`, or integers) -> the
  next layers' integer inputs: `INPUT_UNITS * values` rounded half up,
  clipped to [-128, 127]. Exact in float32 while |64 * value| < 2**24;
  beyond it, clipped (a NaN, which no decoder gives, is 0)."""
  values = np.floor(INPUT_UNITS * np.nan_to_num(
      np.asarray(values, np.float64)) + 0.5)
  return np.clip(values, *INPUT_LIMITS).astype(np.int32)


def latent_units(latent):
  """Latent values -> int32 in 1/LATENT_UNITS, rounded half to even,
  clipped inside +-LATENT_LIMIT (a NaN, which no encoder gives, is 0)."""
  units = np.rint(LATENT_UNITS * np.nan_to_num(
      np.asarray(latent, np.float64)))
  return np.clip(units, 1 - LATENT_LIMIT, LATENT_LIMIT - 1).astype(np.int32)


def symbols(units, loc_q):
  """What the board codes of a latent `units` (`latent_units`) at a
  location `loc_q` (1/LOC_UNITS): round(y - loc), halves up, in integers
  (`csrc/slice_predictor.h`)."""
  units = np.asarray(units, np.int64) - (
      LATENT_UNITS // LOC_UNITS) * np.asarray(loc_q, np.int64)
  return ((units + LATENT_UNITS // 2) // LATENT_UNITS).astype(np.int32)


class IntegerSlicePredictor:
  """Integer layers (`int_layers.conv2d`'s arguments) -> slice tables.

  Args:
    hyper: the hyper-synthesis layers, in order; each a dict with "kernel"
      (int8), "bias", "divisor" (int32) and "stride", "transpose", "low",
      "high" (`IntegerConv2D.integer_weights()`).
    slices: per slice, its layers, the same way.
    slice_sizes: channels per slice.
    num_scales: how many tables the index picks from.
    native_layers: run the layers in C where it builds (False: numpy; the
      integers are the same).

  Raises:
    ValueError, one line: layers that do not chain into a predictor.
  """

  def __init__(self, hyper, slices, slice_sizes, num_scales, *,
               native_layers=True):
    self.hyper = [dict(layer) for layer in hyper]
    self.slices = [[dict(layer) for layer in layers] for layers in slices]
    self.slice_sizes = [int(s) for s in slice_sizes]
    self.num_scales = int(num_scales)
    self._conv = native.int_conv2d if native_layers else int_layers.conv2d
    self._check()

  def _check(self):
    def fail(why):
      raise ValueError(f"integer slice predictor: {why}")

    if (not self.hyper or not all(self.slices)
        or len(self.slices) != len(self.slice_sizes)):
      fail("no hyper-synthesis layers, or a slice without its size or "
           "without layers")
    if self.num_scales < 1 or min(self.slice_sizes, default=0) < 1:
      fail("a slice of no channels, or no tables")
    for layers in (self.hyper, *self.slices):
      for layer, after in zip(layers, layers[1:]):
        if after["kernel"].shape[2] != layer["kernel"].shape[3]:
          fail("a layer's input channels are not its predecessor's outputs")
        if layer["low"] < INPUT_LIMITS[0] or layer["high"] > INPUT_LIMITS[1]:
          fail("a layer that feeds another is not clipped to [-128, 127]")
      for layer in layers:  # int_layers' own checks, on an empty input
        int_layers.check(
            np.zeros((1, 1, 1, layer["kernel"].shape[2]), np.int32),
            layer["kernel"], layer["bias"], layer["divisor"],
            layer["stride"], layer["low"], layer["high"])
    features = self.hyper[-1]["kernel"].shape[3]
    for k, (layers, size) in enumerate(zip(self.slices, self.slice_sizes)):
      expected = features + sum(self.slice_sizes[:k])
      if layers[0]["kernel"].shape[2] != expected:
        fail(f"slice {k} takes {layers[0]['kernel'].shape[2]} channels, "
             f"not the features' and the slices' before it ({expected})")
      if layers[-1]["kernel"].shape[3] != 2 * size:
        fail(f"slice {k} predicts {layers[-1]['kernel'].shape[3]} channels, "
             f"not 2 x {size}")
      if (layers[-1]["low"], layers[-1]["high"]) != LOC_LIMITS:
        fail(f"slice {k}'s last layer is not clipped to {LOC_LIMITS}")

  def _run(self, layers, inputs):
    for layer in layers:
      inputs = self._conv(
          inputs, layer["kernel"], layer["bias"], layer["divisor"],
          stride=layer["stride"], transpose=layer["transpose"],
          low=layer["low"], high=layer["high"])
    return inputs

  def features(self, z_hat, spatial_shape):
    """Hyper-latent integers (N, h, w, channels) -> int32 hyper features
    (N, *spatial_shape, features)."""
    z_hat = np.clip(np.asarray(z_hat, np.int64), *INPUT_LIMITS)
    features = self._run(self.hyper, z_hat.astype(np.int32))
    rows, cols = (int(d) for d in spatial_shape)
    if features.shape[1] < rows or features.shape[2] < cols:
      raise ValueError(f"integer slice predictor: a hyper-latent of "
                       f"{z_hat.shape[1:3]} cannot predict a latent of "
                       f"{(rows, cols)}")
    return features[:, :rows, :cols]

  def predict(self, k, features, decoded):
    """Slice `k`'s (loc_q, index), int32 (N, rows, cols, size), from the
    hyper `features` and the slices decoded before it (a list, as
    `to_inputs` takes them)."""
    inputs = np.concatenate(
        [features, *(to_inputs(d) for d in decoded)], -1)
    out = self._run(self.slices[k], inputs)
    size = self.slice_sizes[k]
    return out[..., :size], np.clip(out[..., size:], 0, self.num_scales - 1)

  def quantize(self, z_hat, units):
    """The board's slice loop: hyper-latent integers (N, h, w, channels)
    and the latent in 1/LATENT_UNITS (N, rows, cols, channels) -> int32
    (symbols, table indexes), (N, values per image) in coding order (slice
    after slice, each in C order). ValueError (one line) for a latent
    outside +-LATENT_LIMIT."""
    units = np.asarray(units, np.int64)
    if units.size and np.abs(units).max() >= LATENT_LIMIT:
      raise ValueError("integer slice predictor: a latent beyond "
                       "+-LATENT_LIMIT units")
    features = self.features(z_hat, units.shape[1:3])
    decoded, coded, indexes = [], [], []
    bounds = np.cumsum(self.slice_sizes)[:-1]
    for k, slice_units in enumerate(np.split(units, bounds, -1)):
      loc_q, index = self.predict(k, features, decoded)
      values = symbols(slice_units, loc_q)
      decoded.append(values + loc_q / np.float64(LOC_UNITS))
      coded.append(values.reshape(len(units), -1))
      indexes.append(index.reshape(len(units), -1))
    return (np.concatenate(coded, 1).astype(np.int32),
            np.concatenate(indexes, 1).astype(np.int32))

  def figures(self, latent_shape):
    """What a board stores and computes for one image of a latent of
    spatial shape `latent_shape`: "bytes" of its arrays (int8 kernels,
    int32 biases and divisors), "parameters", "macs" (multiply-accumulates)
    and "activation_bytes", the int32 activations a runtime holds at once
    at most (the features, and a slice layer's input and output)."""
    rows, cols = (int(d) for d in latent_shape)
    parameters = macs = 0
    for layers, shape in [(self.hyper, (-(-rows // 2), -(-cols // 2)))] + [
        (layers, (rows, cols)) for layers in self.slices]:
      for layer in layers:
        kernel, stride = layer["kernel"], layer["stride"]
        out = [int_layers.output_size(d, stride, layer["transpose"])
               for d in shape]
        parameters += kernel.size + 2 * kernel.shape[3]
        # A transposed layer's taps run once per input position, a
        # convolution's once per output position.
        positions = shape if layer["transpose"] else out
        macs += positions[0] * positions[1] * kernel.size
        shape = out
    features = rows * cols * self.hyper[-1]["kernel"].shape[3]
    slice_layers = max(
        rows * cols * (layer["kernel"].shape[2] + layer["kernel"].shape[3])
        for layers in self.slices for layer in layers)
    return {"dtype": "int8", "bytes": int(sum(
        array.nbytes for array in self.arrays("").values())),
            "parameters": int(parameters), "macs": int(macs),
            "activation_bytes": 4 * int(features + slice_layers)}

  def arrays(self, prefix):
    """The predictor as flat-keyed arrays (tables.npz's), under `prefix`."""
    arrays = {f"{prefix}/slice_sizes": np.array(self.slice_sizes, np.int32),
              f"{prefix}/num_scales": np.int32(self.num_scales)}
    groups = [("hyper", self.hyper)] + [
        (f"slice_{k}", layers) for k, layers in enumerate(self.slices)]
    for group, layers in groups:
      for i, layer in enumerate(layers):
        key = f"{prefix}/{group}/{i}"
        arrays[f"{key}/kernel"] = np.asarray(layer["kernel"], np.int8)
        arrays[f"{key}/bias"] = np.asarray(layer["bias"], np.int32)
        arrays[f"{key}/divisor"] = np.asarray(layer["divisor"], np.int32)
        arrays[f"{key}/config"] = np.array(
            [layer["stride"], layer["transpose"], layer["low"],
             layer["high"]], np.int32)
    return arrays

  @classmethod
  def from_arrays(cls, arrays, prefix, **kwargs):
    """The predictor `arrays(prefix)` wrote; ValueError (one line) where
    an array is missing or of the wrong type."""
    def layers(group):
      found = []
      while f"{prefix}/{group}/{len(found)}/kernel" in arrays:
        key = f"{prefix}/{group}/{len(found)}"
        try:
          fields = [np.asarray(arrays[f"{key}/{f}"]) for f in _FIELDS]
        except KeyError as e:
          raise ValueError(f"integer slice predictor: {key} lacks "
                           f"{e.args[0]}") from None
        kernel, bias, divisor, config = fields
        if (kernel.dtype != np.int8 or kernel.ndim != 4
            or config.shape != (4,)
            or any(a.dtype != np.int32 for a in (bias, divisor, config))):
          raise ValueError(f"integer slice predictor: {key} is not int8 "
                           "kernels with int32 bias, divisor and config")
        stride, transpose, low, high = (int(v) for v in config)
        found.append({"kernel": kernel, "bias": bias, "divisor": divisor,
                      "stride": stride, "transpose": bool(transpose),
                      "low": low, "high": high})
      return found

    try:
      sizes = np.asarray(arrays[f"{prefix}/slice_sizes"]).tolist()
      num_scales = int(arrays[f"{prefix}/num_scales"])
    except KeyError:
      raise ValueError(f"integer slice predictor: no {prefix}/slice_sizes "
                       "or num_scales") from None
    return cls(layers("hyper"), [layers(f"slice_{k}")
                                 for k in range(len(sizes))],
               sizes, num_scales, **kwargs)
