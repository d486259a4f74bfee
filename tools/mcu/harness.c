/* Codes int8 latents into messages with a bundle's mcu/ coder, on the host
 * (tests/test_mcu.py) or on a Cortex-M (tools/mcu/qemu.sh, via newlib's
 * semihosted stdio).
 *
 * stdin, per image: a little-endian u32 counter then TFVAECLF_LATENT_VALUES
 * int8 values; for a conditional model, TFVAECLF_HYPER_VALUES int8 values
 * then the slice coder's TFVAECLF_LATENT_VALUES values and as many indexes
 * (int32, the host's byte order); for one with an integer slice predictor,
 * TFVAECLF_HYPER_VALUES then TFVAECLF_LATENT_VALUES int8 values. stdout:
 * per image, a little-endian u32 length then the message. Exits 1 on a
 * coder error. */
#include <stdio.h>

#include "tfvaeclf_model.h"

static uint8_t message[TFVAECLF_MAX_MESSAGE_BYTES];

#if TFVAECLF_INTEGER_PREDICTOR
static int8_t hyper[TFVAECLF_HYPER_VALUES], latent[TFVAECLF_LATENT_VALUES];

/* Reads one image's int8 outputs and codes them: the length, an error, or
 * 0 at the end of the input. */
static int32_t next_message(void) {
  if (fread(hyper, 1, sizeof(hyper), stdin) != sizeof(hyper)) return 0;
  if (fread(latent, 1, sizeof(latent), stdin) != sizeof(latent)) {
    return RC_ERR_ARG;
  }
  return tfvaeclf_encode_integer_message(&tfvaeclf_model_codec, hyper,
                                         latent, message,
                                         (int32_t)sizeof(message));
}
#elif TFVAECLF_CONDITIONAL
static int8_t hyper[TFVAECLF_HYPER_VALUES];
static int32_t values[TFVAECLF_LATENT_VALUES], indexes[TFVAECLF_LATENT_VALUES];

/* Reads one image's inputs and codes them: the length, an error, or 0 at
 * the end of the input. */
static int32_t next_message(void) {
  if (fread(hyper, 1, sizeof(hyper), stdin) != sizeof(hyper)) return 0;
  if (fread(values, 1, sizeof(values), stdin) != sizeof(values) ||
      fread(indexes, 1, sizeof(indexes), stdin) != sizeof(indexes)) {
    return RC_ERR_ARG;
  }
  return tfvaeclf_encode_conditional_message(
      &tfvaeclf_model_codec, hyper, values, indexes, message,
      (int32_t)sizeof(message));
}
#else
static int8_t latent[TFVAECLF_LATENT_VALUES];

static int32_t next_message(void) {
  uint8_t word[4];
  uint32_t counter;
  if (fread(word, 1, 4, stdin) != 4) return 0;
  counter = word[0] | (uint32_t)word[1] << 8 | (uint32_t)word[2] << 16 |
            (uint32_t)word[3] << 24;
  if (fread(latent, 1, sizeof(latent), stdin) != sizeof(latent)) {
    return RC_ERR_ARG;
  }
  return tfvaeclf_encode_message(&tfvaeclf_model_codec, latent, counter,
                                 message, (int32_t)sizeof(message));
}
#endif

int main(void) {
  int32_t length;
  while ((length = next_message()) != 0) {
    uint8_t word[4];
    int i;
    if (length < 0) {
      fprintf(stderr, "%s\n", rc_strerror(length));
      return 1;
    }
    for (i = 0; i < 4; ++i) word[i] = (uint8_t)((uint32_t)length >> (8 * i));
    fwrite(word, 1, 4, stdout);
    fwrite(message, 1, (size_t)length, stdout);
  }
  return 0;
}
