/* Codes int8 latents into messages with a bundle's mcu/ coder, on the host
 * (tests/test_mcu.py) or on a Cortex-M (tools/mcu/qemu.sh, via newlib's
 * semihosted stdio).
 *
 * stdin: per image, a little-endian u32 counter then TFVAECLF_LATENT_VALUES
 * int8 values. stdout: per image, a little-endian u32 length then the
 * message. Exits 1 on a coder error. */
#include <stdio.h>

#include "tfvaeclf_model.h"

static int8_t latent[TFVAECLF_LATENT_VALUES];
static uint8_t message[TFVAECLF_MAX_MESSAGE_BYTES];

int main(void) {
  uint8_t word[4];
  while (fread(word, 1, 4, stdin) == 4) {
    uint32_t counter = word[0] | (uint32_t)word[1] << 8 |
                       (uint32_t)word[2] << 16 | (uint32_t)word[3] << 24;
    int32_t length, i;
    if (fread(latent, 1, sizeof(latent), stdin) != sizeof(latent)) return 1;
    length = tfvaeclf_encode_message(&tfvaeclf_model_codec, latent, counter,
                                     message, (int32_t)sizeof(message));
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
