/* See slice_predictor.h for the model and the rounding rules. */
#include "slice_predictor.h"

#include <stddef.h>

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

/* Runs `count` layers from `a` (holding the input, height x width),
 * alternating with `b`; returns the buffer holding the output and its
 * rows and columns in *height and *width. */
static int run_layers(const sp_layer *layers, int32_t count, int32_t *a,
                      int32_t *b, int32_t *height, int32_t *width,
                      int32_t **output) {
  int32_t i;
  for (i = 0; i < count; ++i) {
    const sp_layer *l = &layers[i];
    int status = il_conv2d(a, 1, *height, *width, l->in_channels, l->kernel,
                           l->kernel_h, l->kernel_w, l->out_channels, l->bias,
                           l->divisor, l->stride, l->transpose, l->low,
                           l->high, b);
    int32_t *t = a;
    if (status != IL_OK) return status;
    *height = il_output_size(*height, l->stride, l->transpose);
    *width = il_output_size(*width, l->stride, l->transpose);
    a = b;
    b = t;
  }
  *output = a;
  return IL_OK;
}

/* Checks that the layers chain into a predictor; the largest layer input
 * or output (elements) in *largest, and the features' channels. */
static int check_chain(const sp_predictor *p, int64_t *largest,
                       int32_t *features) {
  const sp_layer *l = p->layers;
  int64_t height = p->hyper_rows, width = p->hyper_cols, offset = 0;
  int32_t group, i;
  if (p->num_slices < 1 || p->num_scales < 1 || p->rows < 1 || p->cols < 1 ||
      p->hyper_rows < 1 || p->hyper_cols < 1 || p->rows > (1 << 15) ||
      p->cols > (1 << 15) || p->hyper_rows > (1 << 15) ||
      p->hyper_cols > (1 << 15))
    return IL_ERR_SHAPE;
  *largest = height * width * l->in_channels;
  for (group = 0; group <= p->num_slices; ++group) {
    int32_t count = p->num_layers[group], size = 0;
    if (count < 1) return IL_ERR_SHAPE;
    if (group > 0) {
      size = p->slice_sizes[group - 1];
      height = p->rows;
      width = p->cols;
      if (size < 1 || l->in_channels != *features + offset)
        return IL_ERR_SHAPE;
      *largest = max64(*largest, height * width * l->in_channels);
    }
    for (i = 0; i < count; ++i, ++l) {
      int last = i == count - 1;
      if (l->stride != 1 && l->stride != 2) return IL_ERR_SHAPE;
      if (i > 0 && l->in_channels != l[-1].out_channels) return IL_ERR_SHAPE;
      /* What feeds a layer is an input of [-128, 127]; a location keeps
       * within [-2**15, 2**15). */
      if (group > 0 && last ? (l->low < -(1 << 15) || l->high >= (1 << 15))
                            : (l->low < -128 || l->high > 127))
        return IL_ERR_RANGE;
      height = il_output_size((int32_t)height, l->stride, l->transpose);
      width = il_output_size((int32_t)width, l->stride, l->transpose);
      *largest = max64(*largest, height * width * l->out_channels);
    }
    if (group == 0) {
      *features = l[-1].out_channels;
      if (height < p->rows || width < p->cols) return IL_ERR_SHAPE;
    } else {
      if (l[-1].out_channels != 2 * size) return IL_ERR_SHAPE;
      offset += size;
    }
  }
  return IL_OK;
}

static int32_t latent_channels(const sp_predictor *p) {
  int32_t k, channels = 0;
  for (k = 0; k < p->num_slices; ++k) channels += p->slice_sizes[k];
  return channels;
}

int32_t sp_scratch_size(const sp_predictor *p) {
  int64_t largest, size;
  int32_t features;
  int status = check_chain(p, &largest, &features);
  if (status != IL_OK) return -status;
  /* The features, the coded slices in quarters, two layer buffers. */
  size = (int64_t)p->rows * p->cols * (features + latent_channels(p)) +
         2 * largest;
  return size > INT32_MAX ? -IL_ERR_SHAPE : (int32_t)size;
}

int sp_quantize(const sp_predictor *p, const int32_t *z_hat,
                const int32_t *y_units, int32_t *scratch,
                int32_t scratch_size, int32_t *symbols, int32_t *indexes) {
  int64_t largest;
  int32_t features, channels, positions, height, width, i, c, k, offset;
  int32_t *feature, *quarters, *a, *b, *out;
  const sp_layer *layers = p->layers;
  int32_t needed = sp_scratch_size(p);
  int status;
  if (needed < 0) return -needed;
  if (scratch_size < needed) return IL_ERR_SCRATCH;
  check_chain(p, &largest, &features);
  channels = latent_channels(p);
  positions = p->rows * p->cols;
  for (i = 0; i < positions * channels; ++i)
    if (y_units[i] <= -SP_LATENT_LIMIT || y_units[i] >= SP_LATENT_LIMIT)
      return IL_ERR_INPUT;
  feature = scratch;
  quarters = feature + (size_t)positions * features;
  a = quarters + (size_t)positions * channels;
  b = a + largest;
  /* The features: z_hat clipped, the hyper-synthesis, cropped. */
  for (i = 0; i < p->hyper_rows * p->hyper_cols * layers->in_channels; ++i)
    a[i] = z_hat[i] < -128 ? -128 : z_hat[i] > 127 ? 127 : z_hat[i];
  height = p->hyper_rows;
  width = p->hyper_cols;
  status = run_layers(layers, p->num_layers[0], a, b, &height, &width, &out);
  if (status != IL_OK) return status;
  for (i = 0; i < positions; ++i)
    for (c = 0; c < features; ++c)
      feature[(size_t)i * features + c] =
          out[((size_t)(i / p->cols) * width + i % p->cols) * features + c];
  layers += p->num_layers[0];
  for (k = 0, offset = 0; k < p->num_slices; ++k) {
    int32_t size = p->slice_sizes[k], in = features + offset;
    int32_t *slice_symbols = symbols + (size_t)positions * offset;
    int32_t *slice_indexes = indexes + (size_t)positions * offset;
    for (i = 0; i < positions; ++i) {
      for (c = 0; c < features; ++c)
        a[(size_t)i * in + c] = feature[(size_t)i * features + c];
      for (c = 0; c < offset; ++c)
        a[(size_t)i * in + features + c] = quarters[(size_t)i * channels + c];
    }
    height = p->rows;
    width = p->cols;
    status = run_layers(layers, p->num_layers[1 + k], a, b, &height, &width,
                        &out);
    if (status != IL_OK) return status;
    for (i = 0; i < positions; ++i)
      for (c = 0; c < size; ++c) {
        int32_t loc = out[(size_t)i * 2 * size + c];
        int32_t index = out[(size_t)i * 2 * size + size + c];
        int32_t symbol = il_floor_div(
            y_units[(size_t)i * channels + offset + c] -
                SP_LATENT_UNITS / SP_LOC_UNITS * loc + SP_LATENT_UNITS / 2,
            SP_LATENT_UNITS);
        int32_t quarter = il_floor_div(SP_LOC_UNITS * symbol + loc + 8, 16);
        slice_symbols[(size_t)i * size + c] = symbol;
        slice_indexes[(size_t)i * size + c] =
            index < 0 ? 0 : index >= p->num_scales ? p->num_scales - 1 : index;
        quarters[(size_t)i * channels + offset + c] =
            quarter < -128 ? -128 : quarter > 127 ? 127 : quarter;
      }
    layers += p->num_layers[1 + k];
    offset += size;
  }
  return IL_OK;
}
