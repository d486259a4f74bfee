/* See tfvaeclf_message.h. */
#include "tfvaeclf_message.h"

#define KIND 0x10u         /* message version 1 << 4 */
#define HAS_COUNTER 0x01u
#define GOLDEN 0x9E3779B9u

/* dither.py's _mix: its int64 products mod 2**32 are uint32 products. */
static uint32_t mix(uint32_t x) {
  x = (x ^ (x >> 16)) * 0x7FEB352Du;
  x = (x ^ (x >> 16)) * 0x2C1B3C6Du;
  return x ^ (x >> 15);
}

uint32_t tfvaeclf_crc32(uint32_t crc, const uint8_t *data, size_t length) {
  size_t i;
  int bit;
  crc = ~crc;
  for (i = 0; i < length; ++i) {
    crc ^= data[i];
    for (bit = 0; bit < 8; ++bit) {
      crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
  }
  return ~crc;
}

/* One stream's string of `codec`'s int8 latent into out[0, capacity): its
 * length, or an error. `image_key`: the message's dither hash. */
static int32_t code_channels(const tfvaeclf_codec *codec, const int8_t *latent,
                             uint32_t image_key, uint8_t *out,
                             int32_t capacity) {
  rc_encoder enc;
  int32_t k;
  rc_encoder_init(&enc, out, capacity);
  for (k = 0; k < codec->num_values; ++k) {
    int q = latent[k] + 128;
    int32_t value = codec->value[q];
    if (codec->step1) {
      uint32_t bits = mix(image_key + (uint32_t)k) >> 8;
      value += (bits >= codec->step1[q]) + (bits >= codec->step2[q]);
      if (value < 0) value = 0;
      if (value > codec->levels - 1) value = codec->levels - 1;
    }
    rc_encoder_put(&enc, &codec->tables[k % codec->num_tables], value);
  }
  return rc_encoder_finish(&enc);
}

/* Appends the CRC of the fingerprint and out[0, length): the message's
 * length. */
static int32_t seal(const uint8_t *fingerprint, uint8_t *out, int32_t length) {
  int k;
  uint32_t crc = tfvaeclf_crc32(0, fingerprint, TFVAECLF_FINGERPRINT_BYTES);
  crc = tfvaeclf_crc32(crc, out, (size_t)length);
  for (k = 0; k < 4; ++k) out[length++] = (uint8_t)(crc >> (8 * k));
  return length;
}

/* Writes `value` in LEB128 at out[0]: its bytes. */
static int32_t leb128(uint32_t value, uint8_t *out) {
  int32_t head = 0;
  do {
    uint8_t byte = (uint8_t)(value & 0x7Fu);
    value >>= 7;
    out[head++] = (uint8_t)(byte | (value ? 0x80u : 0u));
  } while (value);
  return head;
}

int32_t tfvaeclf_encode_message(const tfvaeclf_codec *codec,
                                const int8_t *latent, uint32_t counter,
                                uint8_t *out, int32_t capacity) {
  int32_t head = 0, length;
  uint32_t image_key = 0;
  if (codec == NULL || latent == NULL || out == NULL || capacity < 0) {
    return RC_ERR_ARG;
  }
  if (capacity < TFVAECLF_MESSAGE_OVERHEAD) return RC_ERR_CAPACITY;
  out[head++] = (uint8_t)(KIND | (codec->step1 ? HAS_COUNTER : 0u));
  if (codec->step1) {
    head += leb128(counter, out + head);
    image_key = mix(codec->dither_key + counter + GOLDEN);
  }
  length = code_channels(codec, latent, image_key, out + head,
                         capacity - head - 4);
  if (length < 0) return length;
  return seal(codec->fingerprint, out, head + length);
}

int32_t tfvaeclf_encode_conditional_message(
    const tfvaeclf_conditional_codec *codec, const int8_t *hyper,
    const int32_t *values, const int32_t *indexes, uint8_t *out,
    int32_t capacity) {
  rc_encoder enc;
  int32_t head = 1, length, size, k;
  if (codec == NULL || hyper == NULL || values == NULL || indexes == NULL ||
      out == NULL || capacity < 0) {
    return RC_ERR_ARG;
  }
  if (capacity < TFVAECLF_MESSAGE_OVERHEAD) return RC_ERR_CAPACITY;
  out[0] = (uint8_t)KIND;
  /* The hyper-latent's string after room for its length's 5 LEB128 bytes,
   * then moved down behind the length, once known. */
  length = code_channels(codec->hyper, hyper, 0, out + 1 + 5,
                         capacity - 1 - 5 - 4);
  if (length < 0) return length;
  size = leb128((uint32_t)length, out + head);
  head += size;
  for (k = 0; k < length; ++k) out[head + k] = out[1 + 5 + k];
  head += length;
  rc_encoder_init(&enc, out + head, capacity - head - 4);
  for (k = 0; k < codec->num_values; ++k) {
    if (indexes[k] < 0 || indexes[k] >= codec->num_tables) {
      return RC_ERR_INDEX;
    }
    rc_encoder_put(&enc, &codec->tables[indexes[k]], values[k]);
  }
  length = rc_encoder_finish(&enc);
  if (length < 0) return length;
  return seal(codec->hyper->fingerprint, out, head + length);
}
