/* Integer convolution layers: the one arithmetic rule of the project's
 * integer networks (a conditional coder's slice predictor), so that the
 * board, a microcontroller and the server compute the same integers.
 *
 * The rule (Balle, Johnston and Minnen, "Integer networks for data
 * compression with latent-variable models", ICLR 2019): for each output
 * element,
 *
 *     acc = bias[o] + sum of kernel * input    (int32, exact)
 *     v   = floor((acc + floor(divisor[o] / 2)) / divisor[o])
 *     out = min(max(v, low), high)
 *
 * a rounding division (halves round up) and a clip (low 0: the network's
 * ReLU). Inputs must lie in [-128, 127] and kernels are int8, so
 * |acc| <= |bias| + 2**14 * fan-in; a layer whose bound does not fit int32
 * is refused (IL_ERR_RANGE) before any work. Nothing here uses floating
 * point, malloc, recursion or the stack beyond a fixed frame.
 *
 * Layout: NHWC tensors, kernels (kernel_h, kernel_w, in_channels,
 * out_channels) for both kinds. Padding is TensorFlow's "same": a
 * convolution of stride s gives ceil(height / s) rows, padded
 * max((rows - 1) * s + kernel_h - height, 0) in all, half of it (rounded
 * down) on top; a transposed convolution gives height * s rows and is that
 * convolution's transpose (tf.nn.conv2d_transpose), so integer-valued
 * float32 tensors through TensorFlow's layers give `acc` exactly while
 * |acc| < 2**24.
 */
#ifndef TFVAECLF_INT_LAYERS_H_
#define TFVAECLF_INT_LAYERS_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
  IL_OK = 0,
  IL_ERR_SHAPE = 1,   /* a size below 1, or a stride other than 1 or 2 */
  IL_ERR_DIVISOR = 2, /* a divisor outside [1, IL_MAX_DIVISOR] */
  IL_ERR_INPUT = 3,   /* an input outside [-128, 127] */
  IL_ERR_RANGE = 4,   /* |bias| + 2**14 * fan-in + divisor may pass int32,
                         or low > high */
  IL_ERR_SCRATCH = 5, /* too little scratch (slice_predictor.h) */
};

#define IL_MAX_DIVISOR 32768

/* floor(a / d) for d > 0: the rule's division (C's rounds toward 0). */
int32_t il_floor_div(int32_t a, int32_t d);

/* Output rows (or columns) of a layer on `size` input rows. */
int32_t il_output_size(int32_t size, int32_t stride, int32_t transpose);

/* One layer on `batch` images: `output` holds batch * rows * columns *
 * out_channels int32 (rows, columns from il_output_size). On an error
 * code, nothing is written to `output`. */
int il_conv2d(const int32_t *input, int32_t batch, int32_t height,
              int32_t width, int32_t in_channels, const int8_t *kernel,
              int32_t kernel_h, int32_t kernel_w, int32_t out_channels,
              const int32_t *bias, const int32_t *divisor, int32_t stride,
              int32_t transpose, int32_t low, int32_t high,
              int32_t *output);

/* A short English description of an error code. */
const char *il_strerror(int status);

#ifdef __cplusplus
}
#endif

#endif /* TFVAECLF_INT_LAYERS_H_ */
