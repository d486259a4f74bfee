/* Codes the fixed latents of fixed_latents.h (written by tests/test_mcu.py
 * or tools/mcu/qemu.sh) and prints each message in hex, one a line: the
 * same program on the host and on the emulated Cortex-M4. */
#include <stdio.h>

#include "fixed_latents.h"
#include "tfvaeclf_model.h"

static uint8_t message[TFVAECLF_MAX_MESSAGE_BYTES];

int main(void) {
  int image;
  for (image = 0; image < FIXED_IMAGES; ++image) {
#if TFVAECLF_INTEGER_PREDICTOR
    int32_t i, length = tfvaeclf_encode_integer_message(
        &tfvaeclf_model_codec, fixed_hyper[image], fixed_latent[image],
        message, (int32_t)sizeof(message));
#elif TFVAECLF_CONDITIONAL
    int32_t i, length = tfvaeclf_encode_conditional_message(
        &tfvaeclf_model_codec, fixed_hyper[image], fixed_values[image],
        fixed_indexes[image], message, (int32_t)sizeof(message));
#else
    int32_t i, length = tfvaeclf_encode_message(
        &tfvaeclf_model_codec, fixed_latents[image], fixed_counters[image],
        message, (int32_t)sizeof(message));
#endif
    if (length < 0) {
      printf("error %s\n", rc_strerror(length));
      return 1;
    }
    for (i = 0; i < length; ++i) printf("%02x", message[i]);
    printf("\n");
  }
  return 0;
}
