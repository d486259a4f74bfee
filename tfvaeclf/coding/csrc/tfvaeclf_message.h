/* One image's int8 encoder output -> one message of the wire format
 * (tfvaeclf/bitstream.py), on a board with no Python: C99, no malloc, no
 * floating point, nothing beyond <stddef.h> and <stdint.h> (and
 * range_coder.h).
 *
 * The message is: kind byte (0x10, | 0x01 with a counter), the counter in
 * LEB128 (dithered models only), the stream's range-coded string, and the
 * CRC32 of the model's 8-byte fingerprint followed by every byte before
 * it. A conditional coder's message (hyperprior, channel context) holds two
 * strings: the hyper-latent's length in LEB128, its string, then the
 * latent's (tfvaeclf_encode_conditional_message).
 *
 * Integer only. The encoder's int8 output q stands for the float
 * (q - zero_point) * scale, which the Python edge rounds half to even (after
 * adding the dither u of `tfvaeclf/dither.py`, for a dithered model). The
 * export computes those roundings for all 256 values of q, in float32
 * exactly as the Python edge does: `value[q + 128]` is the coded value
 * without a dither. With one, u = k * 2**-24 - 1/2 for a 24-bit hash k, and
 * the rounded sum grows with k by at most 2 steps; `step1`/`step2` give
 * the k from which it is 1 and 2 more (2**24: never), so the value is
 * clip(value[q] + (k >= step1[q]) + (k >= step2[q]), 0, levels - 1): the
 * same bits as the Python edge's float arithmetic.
 *
 * Worst case: the message takes at most TFVAECLF_MESSAGE_OVERHEAD bytes
 * beyond its string, whose bound the export states per model
 * (TFVAECLF_MAX_MESSAGE_BYTES in tfvaeclf_model.h). Nothing recurses and
 * no function puts an array on the stack: the deepest call chains use a
 * fixed frame, with arm-none-eabi-gcc 12 -Os for Cortex-M4 (gcc
 * -fstack-usage; tools/mcu/qemu.sh lists them): tfvaeclf_encode_message ->
 * its stream coder -> rc_encoder_put's escape step, 180 bytes (32 + 80 +
 * 32 + 24 + 12); tfvaeclf_encode_conditional_message, 236 bytes (88 + 80 +
 * 32 + 24 + 12).
 *
 * Conditional coders: the board runs the float32 slice coder on the coded
 * hyper-latent (hyper->value of its int8 output, as floats) and the
 * dequantized latent; its int32 values and table indexes are coded here
 * with the latent's indexed tables, value k with table indexes[k].
 */
#ifndef TFVAECLF_MESSAGE_H_
#define TFVAECLF_MESSAGE_H_

#include <stddef.h>
#include <stdint.h>

#include "range_coder.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TFVAECLF_FINGERPRINT_BYTES 8
/* Kind byte + a counter's 5 LEB128 bytes + CRC32. */
#define TFVAECLF_MESSAGE_OVERHEAD 10
/* `step1`/`step2` entry meaning "never": the hash has 24 bits. */
#define TFVAECLF_NEVER (((uint32_t)1) << 24)

/* What a model's export freezes (see the file comment). */
typedef struct tfvaeclf_codec {
  const uint8_t *fingerprint;  /* TFVAECLF_FINGERPRINT_BYTES */
  const rc_table *tables;      /* value k of the latent uses table
                                  k % num_tables (its channel) */
  int32_t num_tables;
  int32_t num_values;          /* latent elements per image, (H, W, C) order */
  const int16_t *value;        /* [256]: the value of int8 output q - 128 */
  /* Dithered models only (else step1 is NULL): */
  const uint32_t *step1;       /* [256] */
  const uint32_t *step2;       /* [256] */
  uint32_t dither_key;         /* the seed's hash, tfvaeclf/dither.py */
  int32_t levels;
} tfvaeclf_codec;

/* A conditional coder: the hyper-latent coded as a factorized latent (its
 * fingerprint is the message's), then the latent's indexed tables. */
typedef struct tfvaeclf_conditional_codec {
  const tfvaeclf_codec *hyper;  /* no dither */
  const rc_table *tables;       /* value k uses table indexes[k] */
  int32_t num_tables;
  int32_t num_values;           /* latent values per image, coding order */
} tfvaeclf_conditional_codec;

/* CRC32 (zlib's) of data[0, length), continuing from `crc` (0 to start). */
uint32_t tfvaeclf_crc32(uint32_t crc, const uint8_t *data, size_t length);

/* Writes the message of one image's int8 latent (codec->num_values values)
 * into out[0, capacity). `counter` is its dither index (dithered models;
 * ignored otherwise): the sender increments it per message. Returns the
 * message's length, or a range_coder.h error (< 0): RC_ERR_CAPACITY if
 * `capacity` is too small (TFVAECLF_MAX_MESSAGE_BYTES always suffices). */
int32_t tfvaeclf_encode_message(const tfvaeclf_codec *codec,
                                const int8_t *latent, uint32_t counter,
                                uint8_t *out, int32_t capacity);

/* Writes the message of one image for a conditional coder: the int8
 * hyper-latent `hyper` (codec->hyper->num_values), and the slice coder's
 * `values` and `indexes` (codec->num_values each). Returns the message's
 * length or an error (< 0): RC_ERR_INDEX for an index outside the tables,
 * RC_ERR_CAPACITY if `capacity` is too small (see TFVAECLF_MAX_MESSAGE_BYTES
 * in tfvaeclf_model.h for what suffices). */
int32_t tfvaeclf_encode_conditional_message(
    const tfvaeclf_conditional_codec *codec, const int8_t *hyper,
    const int32_t *values, const int32_t *indexes, uint8_t *out,
    int32_t capacity);

#ifdef __cplusplus
}
#endif

#endif /* TFVAECLF_MESSAGE_H_ */
