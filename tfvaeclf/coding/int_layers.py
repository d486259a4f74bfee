"""Integer convolution layers in numpy: the twin of `csrc/int_layers.c`.

The project's one arithmetic rule for integer networks, which a conditional
coder's slice predictor follows so that every runtime picks the same table
for every latent element (Ballé, Johnston and Minnen, ICLR 2019): int8
kernels over inputs in [-128, 127], an exact int32 sum plus an int32 bias,
a rounding division by a per-channel divisor (halves round up), and a clip
to [low, high] (low 0 is the ReLU). `csrc/int_layers.h` states it in full;
`native.int_conv2d` runs the C code, this module is what it is tested
against and what runs without a compiler.
"""

import numpy as np

__all__ = ["MAX_DIVISOR", "output_size", "conv2d", "check"]

MAX_DIVISOR = 32768
_INT32_MAX = 2**31 - 1


def output_size(size, stride, transpose):
  """Output rows (or columns) of a layer on `size` input rows."""
  return size * stride if transpose else -(-size // stride)


def _same_padding(big, small, kernel, stride):
  """Top (left) padding of TensorFlow's "same" from `big` rows to
  `small`."""
  return max((small - 1) * stride + kernel - big, 0) // 2


def check(inputs, kernel, bias, divisor, stride, low, high):
  """ValueError, in one line (the C code's reasons), unless the layer may
  run: shapes, stride, divisors, the accumulator's int32 bound, inputs."""
  if (inputs.ndim != 4 or kernel.ndim != 4 or min(inputs.shape) < 1
      or min(kernel.shape) < 1 or kernel.shape[2] != inputs.shape[3]
      or bias.shape != kernel.shape[3:] or divisor.shape != bias.shape
      or stride not in (1, 2)):
    raise ValueError("integer layer: a size below 1 or too large, or a "
                     "stride other than 1 or 2")
  if np.any(divisor < 1) or np.any(divisor > MAX_DIVISOR):
    raise ValueError("integer layer: a divisor outside [1, 32768]")
  kernel_h, kernel_w, in_channels, _ = kernel.shape
  bound = (int(np.max(np.abs(bias.astype(np.int64))))
           + 2**14 * kernel_h * kernel_w * in_channels + MAX_DIVISOR)
  if low > high or bound > _INT32_MAX:
    raise ValueError("integer layer: the accumulator may pass int32, or "
                     "low > high")
  if inputs.size and (inputs.min() < -128 or inputs.max() > 127):
    raise ValueError("integer layer: an input outside [-128, 127]")


def conv2d(inputs, kernel, bias, divisor, *, stride=1, transpose=False,
           low=-_INT32_MAX - 1, high=_INT32_MAX):
  """One layer: int32 (batch, rows, columns, out_channels).

  `inputs` (batch, height, width, in_channels) integers in [-128, 127];
  `kernel` int8 (kernel_h, kernel_w, in_channels, out_channels) for both
  kinds; `bias`, `divisor` int32 (out_channels,).
  """
  inputs = np.asarray(inputs, np.int64)
  kernel = np.asarray(kernel, np.int8)
  bias, divisor = (np.asarray(a, np.int32) for a in (bias, divisor))
  check(inputs, kernel, bias, divisor, stride, low, high)
  batch, height, width, _ = inputs.shape
  kernel_h, kernel_w, _, out_channels = kernel.shape
  rows = output_size(height, stride, transpose)
  cols = output_size(width, stride, transpose)
  taps = kernel.astype(np.int64)
  if not transpose:
    top = _same_padding(height, rows, kernel_h, stride)
    left = _same_padding(width, cols, kernel_w, stride)
    span_h = (rows - 1) * stride + kernel_h
    span_w = (cols - 1) * stride + kernel_w
    padded = np.zeros((batch, max(span_h, top + height),
                       max(span_w, left + width), inputs.shape[3]), np.int64)
    padded[:, top:top + height, left:left + width] = inputs
    acc = np.zeros((batch, rows, cols, out_channels), np.int64)
    for ky in range(kernel_h):
      for kx in range(kernel_w):
        window = padded[:, ky:ky + (rows - 1) * stride + 1:stride,
                        kx:kx + (cols - 1) * stride + 1:stride]
        acc += window @ taps[ky, kx]
  else:
    top = _same_padding(rows, height, kernel_h, stride)
    left = _same_padding(cols, width, kernel_w, stride)
    full = np.zeros((batch, max((height - 1) * stride + kernel_h, top + rows),
                     max((width - 1) * stride + kernel_w, left + cols),
                     out_channels), np.int64)
    for ky in range(kernel_h):
      for kx in range(kernel_w):
        full[:, ky:ky + (height - 1) * stride + 1:stride,
             kx:kx + (width - 1) * stride + 1:stride] += inputs @ taps[ky, kx]
    acc = full[:, top:top + rows, left:left + cols]
  acc = acc + bias
  values = (acc + divisor // 2) // divisor  # numpy's // floors
  return np.clip(values, low, high).astype(np.int32)
