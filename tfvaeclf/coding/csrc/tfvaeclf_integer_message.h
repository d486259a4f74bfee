/* One image's int8 encoder outputs -> one message, for a conditional
 * coder whose slice predictor is an integer network (the
 * "indexed_integer" stream): integers only from the encoder's output to
 * the message, so a board with no FPU codes exactly the host's bytes.
 *
 * The hyper-latent's int8 output q is coded as tfvaeclf_message.h's
 * factorized latent (its coded value hyper->value[q + 128] is z_hat); the
 * latent's q is y in 1/65536 units through latent_units[q + 128], which
 * the export computes as the Python edge dequantizes (float32) and rounds;
 * slice_predictor.h's loop gives each value and table index; the
 * conditional writer codes them.
 *
 * The caller owns the work space (no malloc): codec->work, int32, holds
 * z_hat, the latent's units, values and indexes, and the predictor's
 * scratch (TFVAECLF_WORK_BYTES in tfvaeclf_model.h). Not reentrant on the
 * same work space. No recursion and no arrays on the stack: the deepest
 * chain, tfvaeclf_encode_integer_message -> sp_quantize -> its layer loop
 * -> il_conv2d -> its inner product, takes 544 bytes of stack (64 + 160 +
 * 80 + 208 + 32, arm-none-eabi-gcc 12 -Os for Cortex-M4, gcc
 * -fstack-usage; tools/mcu/qemu.sh lists them); the message writer's,
 * 300.
 */
#ifndef TFVAECLF_INTEGER_MESSAGE_H_
#define TFVAECLF_INTEGER_MESSAGE_H_

#include <stdint.h>

#include "slice_predictor.h"
#include "tfvaeclf_message.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The slice predictor refused to run: its layers or the work space do not
 * fit each other (an export's own never does). */
#define TFVAECLF_ERR_PREDICTOR (-32)

typedef struct tfvaeclf_integer_codec {
  const tfvaeclf_conditional_codec *codec; /* hyper-latent and tables */
  const sp_predictor *predictor;
  const int32_t *latent_units; /* [256]: y of int8 output q - 128 */
  int32_t *work;
  int32_t work_size; /* int32 elements of work */
} tfvaeclf_integer_codec;

/* Writes the message of one image: its int8 hyper-latent `hyper`
 * (codec->codec->hyper->num_values) and latent `latent`
 * (codec->codec->num_values, (H, W, C) order). Returns the message's
 * length or an error (< 0): TFVAECLF_ERR_PREDICTOR, or the conditional
 * writer's. */
int32_t tfvaeclf_encode_integer_message(const tfvaeclf_integer_codec *codec,
                                        const int8_t *hyper,
                                        const int8_t *latent, uint8_t *out,
                                        int32_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* TFVAECLF_INTEGER_MESSAGE_H_ */
