/* A conditional coder's slice loop in integers: the board's half of the
 * "indexed_integer" stream (tfvaeclf/coding/slice_predictor.py, whose
 * numpy loop is its twin), for a board with no TensorFlow and no FPU.
 *
 * For one image: the hyper-latent z_hat (clipped to [-128, 127]) through
 * the hyper-synthesis layers, cropped to the latent's rows and columns, is
 * the features. Slice k: the features and the slices coded before it (in
 * quarters) through slice k's layers give, per element, loc_q (the
 * location in 1/64 units) and the table index (clipped to the tables). Its
 * symbol is round(y - loc_q / 64), rounded half up in integers:
 *
 *     symbol = floor((y_units - 1024 * loc_q + 32768) / 65536)
 *
 * where y_units is the latent in 1/65536 units (|y_units| < 2**30; the
 * export tabulates it for each int8 output), and the slice feeds the next
 * ones as clip(floor((64 * symbol + loc_q + 8) / 16), -128, 127): the
 * decoded value symbol + loc_q / 64 in quarters, rounded half up, as the
 * decoder computes it. Every layer is int_layers.h's rule. No floating
 * point, malloc or recursion; the caller gives the scratch.
 */
#ifndef TFVAECLF_SLICE_PREDICTOR_H_
#define TFVAECLF_SLICE_PREDICTOR_H_

#include <stdint.h>

#include "int_layers.h"

#ifdef __cplusplus
extern "C" {
#endif

#define SP_LOC_UNITS 64
#define SP_LATENT_UNITS 65536
#define SP_LATENT_LIMIT (((int32_t)1) << 30) /* |y_units| below it */

/* One layer: int_layers.h's arguments. */
typedef struct sp_layer {
  const int8_t *kernel; /* (kernel_h, kernel_w, in_channels, out_channels) */
  const int32_t *bias, *divisor;
  int32_t kernel_h, kernel_w, in_channels, out_channels;
  int32_t stride, transpose, low, high;
} sp_layer;

typedef struct sp_predictor {
  const sp_layer *layers;     /* the hyper-synthesis', then each slice's */
  const int32_t *num_layers;  /* [0]: the hyper-synthesis', [1 + k]: slice
                                 k's */
  const int32_t *slice_sizes; /* channels of each slice */
  int32_t num_slices, num_scales;
  int32_t hyper_rows, hyper_cols; /* of z_hat; its channels: the first
                                     layer's inputs */
  int32_t rows, cols;             /* of the latent */
} sp_predictor;

/* int32 elements of scratch that sp_quantize needs, or a negative
 * IL_ERR_* code for layers that do not chain into a predictor of these
 * shapes. */
int32_t sp_scratch_size(const sp_predictor *predictor);

/* One image: z_hat (hyper_rows * hyper_cols * channels, NHWC) and the
 * latent in 1/65536 units (rows * cols * latent channels, NHWC) -> its
 * symbols and table indexes, rows * cols * latent channels each, in coding
 * order (slice after slice, each in C order). IL_OK, or an IL_ERR_* code
 * (IL_ERR_SCRATCH: scratch holds fewer than sp_scratch_size elements;
 * IL_ERR_INPUT: a y_units outside the limit), after which the symbols
 * and indexes are not to be coded. */
int sp_quantize(const sp_predictor *predictor, const int32_t *z_hat,
                const int32_t *y_units, int32_t *scratch,
                int32_t scratch_size, int32_t *symbols, int32_t *indexes);

#ifdef __cplusplus
}
#endif

#endif /* TFVAECLF_SLICE_PREDICTOR_H_ */
