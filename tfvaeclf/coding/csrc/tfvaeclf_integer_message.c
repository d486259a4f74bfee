/* See tfvaeclf_integer_message.h. */
#include "tfvaeclf_integer_message.h"

#include <stddef.h>

int32_t tfvaeclf_encode_integer_message(const tfvaeclf_integer_codec *codec,
                                        const int8_t *hyper,
                                        const int8_t *latent, uint8_t *out,
                                        int32_t capacity) {
  int32_t hyper_values, values, i, *z_hat, *units, *symbols, *indexes;
  int32_t used;
  if (codec == NULL || hyper == NULL || latent == NULL || out == NULL) {
    return RC_ERR_ARG;
  }
  hyper_values = codec->codec->hyper->num_values;
  values = codec->codec->num_values;
  used = hyper_values + 3 * values;
  if (codec->work_size < used) return TFVAECLF_ERR_PREDICTOR;
  z_hat = codec->work;
  units = z_hat + hyper_values;
  symbols = units + values;
  indexes = symbols + values;
  for (i = 0; i < hyper_values; ++i) {
    z_hat[i] = codec->codec->hyper->value[hyper[i] + 128];
  }
  for (i = 0; i < values; ++i) units[i] = codec->latent_units[latent[i] + 128];
  if (sp_quantize(codec->predictor, z_hat, units, indexes + values,
                  codec->work_size - used, symbols, indexes) != IL_OK) {
    return TFVAECLF_ERR_PREDICTOR;
  }
  return tfvaeclf_encode_conditional_message(codec->codec, hyper, symbols,
                                             indexes, out, capacity);
}
