/* See int_layers.h for the rule and the layout. */
#include "int_layers.h"

#include <stddef.h>

int32_t il_output_size(int32_t size, int32_t stride, int32_t transpose) {
  return transpose ? size * stride : (size + stride - 1) / stride;
}

/* Padding on top (left) of TensorFlow's "same" for a convolution from
 * `big` rows to `small` ones. */
static int32_t same_padding(int32_t big, int32_t small, int32_t kernel,
                            int32_t stride) {
  int32_t total = (small - 1) * stride + kernel - big;
  return total > 0 ? total / 2 : 0;
}

int32_t il_floor_div(int32_t a, int32_t d) {
  int32_t q = a / d;
  return (a % d != 0 && a < 0) ? q - 1 : q;
}

static int check(const int32_t *input, int64_t inputs, int32_t batch,
                 int32_t height, int32_t width, int32_t in_channels,
                 int32_t kernel_h, int32_t kernel_w, int32_t out_channels,
                 const int32_t *bias, const int32_t *divisor, int32_t stride,
                 int32_t low, int32_t high) {
  int64_t i, bias_max = 0;
  if (batch < 1 || height < 1 || width < 1 || in_channels < 1 ||
      kernel_h < 1 || kernel_w < 1 || out_channels < 1 ||
      (stride != 1 && stride != 2))
    return IL_ERR_SHAPE;
  if (height > (1 << 15) || width > (1 << 15) || kernel_h > 64 ||
      kernel_w > 64 || in_channels > (1 << 16) || out_channels > (1 << 16))
    return IL_ERR_SHAPE;
  for (i = 0; i < out_channels; ++i) {
    int64_t magnitude = bias[i] < 0 ? -(int64_t)bias[i] : bias[i];
    if (divisor[i] < 1 || divisor[i] > IL_MAX_DIVISOR) return IL_ERR_DIVISOR;
    if (magnitude > bias_max) bias_max = magnitude;
  }
  if (low > high ||
      bias_max + ((int64_t)1 << 14) * kernel_h * kernel_w * in_channels +
              IL_MAX_DIVISOR > INT32_MAX)
    return IL_ERR_RANGE;
  for (i = 0; i < inputs; ++i)
    if (input[i] < -128 || input[i] > 127) return IL_ERR_INPUT;
  return IL_OK;
}

/* acc[o] += sum over i of pixel[i] * taps[i][o]: one kernel tap. */
static void accumulate(int32_t *acc, const int32_t *pixel,
                       const int8_t *taps, int32_t in_channels,
                       int32_t out_channels) {
  int32_t i, o;
  for (i = 0; i < in_channels; ++i)
    for (o = 0; o < out_channels; ++o)
      acc[o] += pixel[i] * taps[(size_t)i * out_channels + o];
}

static void finish(int32_t *acc, int64_t count, int32_t out_channels,
                   const int32_t *divisor, int32_t low, int32_t high) {
  int64_t i;
  for (i = 0; i < count; ++i) {
    int32_t d = divisor[i % out_channels];
    int32_t v = il_floor_div(acc[i] + d / 2, d);
    acc[i] = v < low ? low : v > high ? high : v;
  }
}

int il_conv2d(const int32_t *input, int32_t batch, int32_t height,
              int32_t width, int32_t in_channels, const int8_t *kernel,
              int32_t kernel_h, int32_t kernel_w, int32_t out_channels,
              const int32_t *bias, const int32_t *divisor, int32_t stride,
              int32_t transpose, int32_t low, int32_t high,
              int32_t *output) {
  int32_t rows, cols, pad_top, pad_left, n, y, x, ky, kx, i, o;
  int status = check(input, (int64_t)batch * height * width * in_channels,
                     batch, height, width, in_channels, kernel_h, kernel_w,
                     out_channels, bias, divisor, stride, low, high);
  if (status != IL_OK) return status;
  rows = il_output_size(height, stride, transpose);
  cols = il_output_size(width, stride, transpose);
  /* "same" of the convolution from the larger grid to the smaller. */
  pad_top = transpose ? same_padding(rows, height, kernel_h, stride)
                      : same_padding(height, rows, kernel_h, stride);
  pad_left = transpose ? same_padding(cols, width, kernel_w, stride)
                       : same_padding(width, cols, kernel_w, stride);
  for (n = 0; n < batch; ++n) {
    const int32_t *image = input + (size_t)n * height * width * in_channels;
    int32_t *out = output + (size_t)n * rows * cols * out_channels;
    for (i = 0; i < rows * cols; ++i)
      for (o = 0; o < out_channels; ++o) out[(size_t)i * out_channels + o] =
          bias[o];
    if (!transpose) {
      /* Gather: out[y, x] += in[y * s + ky - pad, x * s + kx - pad] k. */
      for (y = 0; y < rows; ++y)
        for (x = 0; x < cols; ++x) {
          int32_t *acc = out + ((size_t)y * cols + x) * out_channels;
          for (ky = 0; ky < kernel_h; ++ky) {
            int32_t iy = y * stride + ky - pad_top;
            if (iy < 0 || iy >= height) continue;
            for (kx = 0; kx < kernel_w; ++kx) {
              int32_t ix = x * stride + kx - pad_left;
              if (ix < 0 || ix >= width) continue;
              accumulate(acc, image + ((size_t)iy * width + ix) * in_channels,
                         kernel + ((size_t)ky * kernel_w + kx) * in_channels *
                                      out_channels,
                         in_channels, out_channels);
            }
          }
        }
    } else {
      /* Scatter: in[y, x] k goes to out[y * s + ky - pad, ...]. */
      for (y = 0; y < height; ++y)
        for (x = 0; x < width; ++x) {
          const int32_t *pixel =
              image + ((size_t)y * width + x) * in_channels;
          for (ky = 0; ky < kernel_h; ++ky) {
            int32_t oy = y * stride + ky - pad_top;
            if (oy < 0 || oy >= rows) continue;
            for (kx = 0; kx < kernel_w; ++kx) {
              int32_t ox = x * stride + kx - pad_left;
              if (ox < 0 || ox >= cols) continue;
              accumulate(out + ((size_t)oy * cols + ox) * out_channels, pixel,
                         kernel + ((size_t)ky * kernel_w + kx) * in_channels *
                                      out_channels,
                         in_channels, out_channels);
            }
          }
        }
    }
    finish(out, (int64_t)rows * cols * out_channels, out_channels, divisor,
           low, high);
  }
  return IL_OK;
}

const char *il_strerror(int status) {
  switch (status) {
    case IL_OK: return "ok";
    case IL_ERR_SHAPE: return "a size below 1 or too large, or a stride "
                              "other than 1 or 2";
    case IL_ERR_DIVISOR: return "a divisor outside [1, 32768]";
    case IL_ERR_INPUT: return "an input outside [-128, 127]";
    case IL_ERR_RANGE: return "the accumulator may pass int32, or low > high";
    case IL_ERR_SCRATCH: return "too little scratch for the slice predictor";
    default: return "unknown status";
  }
}
