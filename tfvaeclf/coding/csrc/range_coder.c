/* TFC-compatible range coder in C99; see range_coder.h for the contract.
 *
 * The coder state is TFC's: the interval [base, base + size_minus1 + 1)
 * modulo 2**32, renormalized 16 bits at a time when its size drops to 2**16
 * or below. While the interval straddles 2**32 (TFC's "state 1") the next
 * digit is not known yet: the encoder delays it (`pending`, `run`), and the
 * decoder, whose base and size follow the encoder's exactly, uses the same
 * test to know which bytes a valid string must hold (`need`).
 */
#include "range_coder.h"

#define INT32_MIN_ ((int64_t)INT32_MIN)
#define INT32_MAX_ ((int64_t)INT32_MAX)

static int straddles(uint32_t base, uint32_t size_minus1) {
  return (uint32_t)(base + size_minus1) < base;
}

/* ------------------------------------------------------------------------ */
/* Tables                                                                   */
/* ------------------------------------------------------------------------ */
int rc_check_tables(const rc_table *tables, int32_t num_tables) {
  int32_t t, i;
  if (tables == NULL || num_tables < 1) return RC_ERR_ARG;
  for (t = 0; t < num_tables; ++t) {
    const rc_table *table = &tables[t];
    if ((table->cdf == NULL && table->cdf16 == NULL) ||
        table->num_symbols < 1 || table->precision < 1 ||
        table->precision > RC_PRECISION_MAX) {
      return RC_ERR_TABLE;
    }
    if (table->cdf == NULL) { /* 16 bits, the last entry implied */
      const uint16_t *cdf16 = table->cdf16;
      if (cdf16[0] != 0 ||
          cdf16[table->num_symbols - 1] > (1u << table->precision)) {
        return RC_ERR_TABLE;
      }
      for (i = 0; i + 1 < table->num_symbols; ++i) {
        if (cdf16[i] > cdf16[i + 1]) return RC_ERR_TABLE;
      }
      continue;
    }
    if (table->cdf[0] != 0 ||
        table->cdf[table->num_symbols] != (int32_t)1 << table->precision) {
      return RC_ERR_TABLE;
    }
    for (i = 0; i < table->num_symbols; ++i) {
      if (table->cdf[i] > table->cdf[i + 1]) return RC_ERR_TABLE;
    }
  }
  return RC_OK;
}

const char *rc_strerror(int status) {
  switch (status) {
    case RC_OK: return "success";
    case RC_ERR_ARG: return "invalid argument";
    case RC_ERR_TABLE: return "malformed coding table";
    case RC_ERR_INDEX: return "table index out of range";
    case RC_ERR_RANGE: return "value outside a table without overflow coding";
    case RC_ERR_ZERO_PROB: return "value has zero probability";
    case RC_ERR_GAMMA:
      return "value too far outside its table (escape needs gamma >= 2**30)";
    case RC_ERR_CAPACITY: return "output buffer too small";
    case RC_ERR_ESCAPE: return "escape code longer than TFC can write";
    case RC_ERR_INT32: return "decoded value overflows int32";
    case RC_ERR_PAST_END: return "string ends before the values it codes";
    case RC_ERR_FINAL: return "end-of-stream sanity check failed";
    default: return "unknown error";
  }
}

/* ------------------------------------------------------------------------ */
/* Encoder                                                                  */
/* ------------------------------------------------------------------------ */
void rc_encoder_init(rc_encoder *enc, uint8_t *out, int32_t capacity) {
  enc->out = out;
  enc->capacity = capacity > 0 && out != NULL ? (uint64_t)capacity : 0;
  enc->length = 0;
  enc->run = 0;
  enc->base = 0;
  enc->size_minus1 = 0xFFFFFFFFu;
  enc->pending = 0;
  enc->status = capacity < 0 || (out == NULL && capacity > 0) ? RC_ERR_ARG
                                                              : RC_OK;
}

static void emit(rc_encoder *enc, uint32_t byte) {
  if (enc->length < enc->capacity) enc->out[enc->length] = (uint8_t)byte;
  enc->length++;
}

/* Emits `count` copies of `byte`; those past the capacity are only
 * counted (the caller turns that into RC_ERR_CAPACITY). */
static void emit_run(rc_encoder *enc, uint32_t byte, uint64_t count) {
  while (count > 0 && enc->length < enc->capacity) {
    enc->out[enc->length++] = (uint8_t)byte;
    --count;
  }
  enc->length += count;
}

/* Narrows the interval to [lower, upper) / 2**precision (TFC's Encode). */
static inline void encode_step(rc_encoder *enc, uint32_t lower,
                               uint32_t upper, int precision) {
  const uint64_t size = (uint64_t)enc->size_minus1 + 1;
  const uint32_t a = (uint32_t)((size * lower) >> precision);
  const uint32_t b = (uint32_t)(((size * upper) >> precision) - 1);
  int base_overflow;
  enc->base += a;
  enc->size_minus1 = b - a;
  base_overflow = enc->base < a;
  if (straddles(enc->base, enc->size_minus1)) {
    /* Still straddling 2**32: a renormalization only delays 2 more bytes,
     * all 0x00 if the interval ends above 2**32, all 0xFF if below. */
    if ((enc->size_minus1 >> 16) == 0) {
      enc->base <<= 16;
      enc->size_minus1 = (enc->size_minus1 << 16) | 0xFFFFu;
      enc->run += 2;
    }
    return;
  }
  if (enc->pending != 0) {
    /* The interval left 2**32: above it (base overflowed) the delayed digit
     * stands, below it the digit is one less. */
    uint32_t digit = enc->pending;
    uint32_t fill = 0x00;
    if (!base_overflow) {
      digit -= 1;
      fill = 0xFF;
    }
    emit(enc, digit >> 8);
    emit(enc, digit & 0xFF);
    emit_run(enc, fill, enc->run);
    enc->pending = 0;
    enc->run = 0;
  }
  if ((enc->size_minus1 >> 16) == 0) {
    const uint32_t top = enc->base >> 16;
    enc->base <<= 16;
    enc->size_minus1 = (enc->size_minus1 << 16) | 0xFFFFu;
    if (!straddles(enc->base, enc->size_minus1)) {
      emit(enc, top >> 8);
      emit(enc, top & 0xFF);
    } else {
      enc->pending = top + 1;
    }
  }
}

static int bit_length(uint32_t x) {
  int bits = 0;
  while (x != 0) {
    ++bits;
    x >>= 1;
  }
  return bits;
}

/* rc_encoder_put. rc_encode calls this, not the exported function, which
 * in a shared library would be called through the PLT and never inlined. */
static int encode_value(rc_encoder *enc, const rc_table *table,
                        int32_t value) {
  uint32_t low, high;
  int64_t symbol;
  int64_t gamma = 0; /* > 0: the value escapes */
  int sign = 0;
  if (enc->status != RC_OK) return enc->status;
  symbol = (int64_t)value - table->offset;
  if (!table->overflow) {
    if (symbol < 0 || symbol >= table->num_symbols) {
      return enc->status = RC_ERR_RANGE;
    }
  } else {
    const int64_t escape = table->num_symbols - 1;
    if (symbol < 0) {
      gamma = -symbol;
      sign = 1;
      symbol = escape;
    } else if (symbol >= escape) {
      gamma = symbol - escape + 1;
      symbol = escape;
    }
    if (gamma > RC_MAX_GAMMA) return enc->status = RC_ERR_GAMMA;
  }
  if (table->cdf != NULL) {
    low = (uint32_t)table->cdf[symbol];
    high = (uint32_t)table->cdf[symbol + 1];
  } else {
    low = table->cdf16[symbol];
    high = symbol + 1 == table->num_symbols ? 1u << table->precision
                                            : table->cdf16[symbol + 1];
  }
  if (low >= high) return enc->status = RC_ERR_ZERO_PROB;
  encode_step(enc, low, high, table->precision);
  if (gamma > 0) {
    const uint32_t g = (uint32_t)gamma;
    const int bits = bit_length(g);
    int i;
    for (i = 1; i < bits; ++i) encode_step(enc, 0, 1, 1);
    for (i = bits - 1; i >= 0; --i) {
      const uint32_t bit = (g >> i) & 1u;
      encode_step(enc, bit, bit + 1, 1);
    }
    encode_step(enc, (uint32_t)sign, (uint32_t)sign + 1, 1);
  }
  if (enc->length > enc->capacity) enc->status = RC_ERR_CAPACITY;
  return enc->status;
}

int rc_encoder_put(rc_encoder *enc, const rc_table *table, int32_t value) {
  return encode_value(enc, table, value);
}

int32_t rc_encoder_finish(rc_encoder *enc) {
  if (enc->status != RC_OK) return enc->status;
  /* TFC's Finalize: the shortest byte string inside the interval, its
   * trailing zeros left implicit. */
  if (enc->pending != 0) {
    /* Straddling 2**32: pick 2**32, i.e. the delayed digit and zeros. */
    emit(enc, enc->pending >> 8);
    if ((enc->pending & 0xFF) != 0) emit(enc, enc->pending & 0xFF);
  } else if (enc->base != 0) {
    const uint32_t upper = enc->base + enc->size_minus1;
    uint32_t mid = ((enc->base - 1) >> 24) + 1;
    if (mid <= (upper >> 24)) {
      emit(enc, mid & 0xFF);
    } else {
      mid = ((enc->base - 1) >> 16) + 1;
      emit(enc, (mid >> 8) & 0xFF);
      if ((mid & 0xFF) != 0) emit(enc, mid & 0xFF);
    }
  }
  if (enc->length > enc->capacity) return enc->status = RC_ERR_CAPACITY;
  return (int32_t)enc->length;
}

/* ------------------------------------------------------------------------ */
/* Decoder                                                                  */
/* ------------------------------------------------------------------------ */
static inline void read16(rc_decoder *dec) {
  uint32_t high = 0, low = 0;
  if (dec->position < dec->length) high = dec->data[dec->position];
  if (dec->position + 1 < dec->length) low = dec->data[dec->position + 1];
  dec->value = (dec->value << 16) | (high << 8) | low;
  dec->position += 2;
}

void rc_decoder_init(rc_decoder *dec, const uint8_t *data, int32_t length) {
  dec->data = data;
  dec->length = length > 0 && data != NULL ? length : 0;
  dec->position = 0;
  dec->need = 0;
  dec->straddling = 0;
  dec->base = 0;
  dec->size_minus1 = 0xFFFFFFFFu;
  dec->value = 0;
  dec->status = length < 0 || (data == NULL && length > 0) ? RC_ERR_ARG
                                                           : RC_OK;
  read16(dec);
  read16(dec);
}

/* The encoder's step, mirrored. Renormalization j reads bytes [2j + 2,
 * 2j + 4) and matches the encoder's j-th digit, bytes [2j - 2, 2j): that
 * digit is in the string unless the encoder delayed it and never resolved
 * it. `need` counts the bytes the encoder must have written so far. */
static inline void decode_narrow(rc_decoder *dec, uint32_t a, uint32_t b) {
  dec->base += a;
  dec->size_minus1 = b - a;
  if (dec->straddling && !straddles(dec->base, dec->size_minus1)) {
    dec->straddling = 0;
    dec->need = dec->position - 4; /* every delayed digit resolved */
  }
  if ((dec->size_minus1 >> 16) == 0) {
    dec->base <<= 16;
    dec->size_minus1 = (dec->size_minus1 << 16) | 0xFFFFu;
    read16(dec);
    if (!dec->straddling) {
      /* The digit is written now, or delayed with at least its first byte
       * written at the end. */
      dec->straddling = straddles(dec->base, dec->size_minus1);
      dec->need = dec->position - 4 - dec->straddling;
    }
  }
  if (dec->need > dec->length && dec->status == RC_OK) {
    dec->status = RC_ERR_PAST_END;
  }
}

static inline void decode_step(rc_decoder *dec, uint32_t lower,
                               uint32_t upper, int precision) {
  const uint64_t size = (uint64_t)dec->size_minus1 + 1;
  decode_narrow(dec, (uint32_t)((size * lower) >> precision),
                (uint32_t)(((size * upper) >> precision) - 1));
}

/* The bin of cdf[0..num_symbols] holding the value (TFC's binary search).
 * Always one of 0..num_symbols - 1, as value - base < size. */
static inline int32_t find_bin(const rc_decoder *dec, const int32_t *cdf,
                               int32_t num_symbols, int precision) {
  const uint64_t size = (uint64_t)dec->size_minus1 + 1;
  const uint64_t bound = ((uint64_t)(uint32_t)(dec->value - dec->base) + 1)
                         << precision;
  const int32_t *first = cdf + 1;
  uint32_t count = (uint32_t)num_symbols;
  while (count > 0) {
    const uint32_t half = count / 2;
    if (bound <= size * (uint64_t)(uint32_t)first[half]) {
      count = half;
    } else {
      first += half + 1;
      count -= half + 1;
    }
  }
  return (int32_t)(first - cdf) - 1;
}

/* Whether the value is in bin `guess`; if so, narrows the interval to it. */
static inline int decode_guess(rc_decoder *dec, const int32_t *cdf,
                               int32_t guess, int precision) {
  const uint64_t size = (uint64_t)dec->size_minus1 + 1;
  const uint64_t bound = ((uint64_t)(uint32_t)(dec->value - dec->base) + 1)
                         << precision;
  const uint64_t low = size * (uint64_t)(uint32_t)cdf[guess];
  const uint64_t high = size * (uint64_t)(uint32_t)cdf[guess + 1];
  if (!(low < bound && bound <= high)) return 0;
  decode_narrow(dec, (uint32_t)(low >> precision),
                (uint32_t)((high >> precision) - 1));
  return 1;
}

static uint32_t decode_bit(rc_decoder *dec) {
  const uint64_t size = (uint64_t)dec->size_minus1 + 1;
  const uint64_t bound = ((uint64_t)(uint32_t)(dec->value - dec->base) + 1)
                         << 1;
  const uint32_t bit = bound <= size ? 0 : 1;
  decode_step(dec, bit, bit + 1, 1);
  return bit;
}

/* rc_decoder_get (see encode_value); `restrict` lets the decoder state stay
 * in registers across the store of a value. */
static int decode_value(rc_decoder *restrict dec,
                        const rc_table *restrict table,
                        int32_t *restrict value) {
  int64_t symbol, result;
  *value = 0;
  if (dec->status != RC_OK) return dec->status;
  if (table->cdf == NULL) return dec->status = RC_ERR_TABLE; /* 16 bits */
  /* A learned latent is mostly zeros: try the bin of value 0 first. */
  symbol = -(int64_t)table->offset;
  if (!(symbol >= 0 && symbol < table->num_symbols &&
        decode_guess(dec, table->cdf, (int32_t)symbol, table->precision))) {
    symbol = find_bin(dec, table->cdf, table->num_symbols, table->precision);
    decode_step(dec, (uint32_t)table->cdf[symbol],
                (uint32_t)table->cdf[symbol + 1], table->precision);
  }
  if (table->overflow && symbol == table->num_symbols - 1) {
    uint32_t g = 1;
    int zeros = 0, i;
    while (decode_bit(dec) == 0) {
      if (++zeros > RC_MAX_ZEROS) {
        if (dec->status == RC_OK) dec->status = RC_ERR_ESCAPE;
        return dec->status;
      }
    }
    for (i = 0; i < zeros; ++i) g = (g << 1) | decode_bit(dec);
    symbol = decode_bit(dec) ? -(int64_t)g : (int64_t)g + symbol - 1;
  }
  result = symbol + table->offset;
  if (result < INT32_MIN_ || result > INT32_MAX_) {
    if (dec->status == RC_OK) dec->status = RC_ERR_INT32;
  }
  if (dec->status != RC_OK) return dec->status;
  *value = (int32_t)result;
  return RC_OK;
}

int rc_decoder_get(rc_decoder *dec, const rc_table *table, int32_t *value) {
  return decode_value(dec, table, value);
}

int rc_decoder_finish(const rc_decoder *dec) {
  const uint32_t base = dec->base;
  const uint32_t upper = base + dec->size_minus1;
  int64_t need = dec->need;
  if (dec->status != RC_OK) return dec->status;
  /* Not straddling 2**32, the encoder wrote every digit, then nothing
   * (base == 0) or 1 or 2 bytes of the tail. */
  if (upper >= base) need = dec->position - 4 + (base != 0);
  if (need > dec->length) return RC_ERR_PAST_END;
  if (dec->position < dec->length) return RC_ERR_FINAL;
  /* TFC's RangeDecoder::Finalize: the value is where the encoder ends. */
  if (base == 0 || upper < base) return dec->value == 0 ? RC_OK : RC_ERR_FINAL;
  {
    const int shift = ((base - 1) >> 24) < (upper >> 24) ? 24 : 16;
    const uint32_t mid = ((base - 1) >> shift) + 1;
    return (uint32_t)(mid << shift) == dec->value ? RC_OK : RC_ERR_FINAL;
  }
}

/* ------------------------------------------------------------------------ */
/* Whole streams and batches                                                */
/* ------------------------------------------------------------------------ */
static int bad_tables(const rc_table *tables, int32_t num_tables) {
  return tables == NULL || num_tables < 1;
}

int32_t rc_encode(const rc_table *tables, int32_t num_tables,
                  const int32_t *index, const int32_t *values, int32_t n,
                  uint8_t *out, int32_t capacity) {
  rc_encoder enc;
  int32_t k, t = 0;
  if (bad_tables(tables, num_tables) || n < 0 || (n > 0 && values == NULL)) {
    return RC_ERR_ARG;
  }
  rc_encoder_init(&enc, out, capacity);
  for (k = 0; k < n && enc.status == RC_OK; ++k) {
    if (index != NULL) {
      t = index[k];
      if (t < 0 || t >= num_tables) return RC_ERR_INDEX;
    }
    encode_value(&enc, &tables[t], values[k]);
    if (index == NULL && ++t == num_tables) t = 0;
  }
  return rc_encoder_finish(&enc);
}

int rc_decode(const rc_table *tables, int32_t num_tables, const int32_t *index,
              const uint8_t *data, int32_t length, int32_t *values,
              int32_t n) {
  rc_decoder dec;
  int32_t k, t = 0;
  int status = RC_OK;
  if (bad_tables(tables, num_tables) || n < 0 || (n > 0 && values == NULL)) {
    return RC_ERR_ARG;
  }
  rc_decoder_init(&dec, data, length);
  for (k = 0; k < n; ++k) {
    if (index != NULL) {
      t = index[k];
      if (t < 0 || t >= num_tables) {
        status = RC_ERR_INDEX;
        break;
      }
    }
    status = decode_value(&dec, &tables[t], &values[k]);
    if (status != RC_OK) break;
    if (index == NULL && ++t == num_tables) t = 0;
  }
  if (status == RC_OK) return rc_decoder_finish(&dec);
  for (; k < n; ++k) values[k] = 0;
  return status;
}

int rc_encode_batch(const rc_table *tables, int32_t num_tables,
                    const int32_t *index, const int32_t *values, int32_t batch,
                    int32_t n, uint8_t *out, int64_t capacity, int64_t *ends,
                    int32_t *failed) {
  int64_t start = 0;
  int32_t b;
  *failed = -1;
  if (batch < 0 || n < 0 || capacity < 0 || (capacity > 0 && out == NULL) ||
      (batch > 0 && (ends == NULL || values == NULL))) {
    return RC_ERR_ARG;
  }
  for (b = 0; b < batch; ++b) {
    const int64_t offset = (int64_t)b * n;
    const int64_t room = capacity - start;
    const int32_t length = rc_encode(
        tables, num_tables, index == NULL ? NULL : index + offset,
        values + offset, n, out == NULL ? NULL : out + start,
        room > INT32_MAX_ ? INT32_MAX : (int32_t)room);
    if (length < 0) {
      *failed = b;
      return length;
    }
    start += length;
    ends[b] = start;
  }
  return RC_OK;
}

int rc_encode_streams(const rc_stream *streams, int32_t count, int32_t batch,
                      uint8_t *out, int64_t capacity, int64_t *ends,
                      int32_t *failed) {
  int64_t start = 0;
  int32_t s, b;
  *failed = -1;
  if (count < 0 || batch < 0 || capacity < 0 ||
      (count > 0 && (streams == NULL || ends == NULL))) {
    return RC_ERR_ARG;
  }
  for (s = 0; s < count; ++s) {
    const rc_stream *stream = &streams[s];
    int64_t *stream_ends = ends + (int64_t)s * batch;
    const int status = rc_encode_batch(
        stream->tables, stream->num_tables, stream->index, stream->values,
        batch, stream->n, out == NULL ? NULL : out + start, capacity - start,
        stream_ends, failed);
    if (status != RC_OK) {
      if (*failed >= 0) *failed += s * batch;
      return status;
    }
    for (b = 0; b < batch; ++b) stream_ends[b] += start;
    if (batch > 0) start = stream_ends[batch - 1];
  }
  return RC_OK;
}

void rc_decode_batch(const rc_table *tables, int32_t num_tables,
                     const int32_t *index, const uint8_t *data,
                     const int64_t *ends, int32_t batch, int32_t n,
                     int32_t *values, int32_t *status) {
  int64_t start = 0;
  int32_t b;
  for (b = 0; b < batch; ++b) {
    const int64_t offset = (int64_t)b * n;
    const int64_t length = ends[b] - start;
    if (length < 0 || length > INT32_MAX_) {
      int32_t k;
      for (k = 0; k < n; ++k) values[offset + k] = 0;
      status[b] = RC_ERR_ARG;
    } else {
      status[b] = rc_decode(tables, num_tables,
                            index == NULL ? NULL : index + offset,
                            data == NULL ? NULL : data + start,
                            (int32_t)length, values + offset, n);
    }
    start = ends[b];
  }
}

void rc_decoders_init(rc_decoder *decs, const uint8_t *data,
                      const int64_t *ends, int32_t batch) {
  int64_t start = 0;
  int32_t b;
  for (b = 0; b < batch; ++b) {
    const int64_t length = ends[b] - start;
    if (length < 0 || length > INT32_MAX_) {
      rc_decoder_init(&decs[b], NULL, -1);  /* RC_ERR_ARG, sticky */
    } else {
      rc_decoder_init(&decs[b], data == NULL ? NULL : data + start,
                      (int32_t)length);
    }
    start = ends[b];
  }
}

void rc_decoders_get(rc_decoder *decs, int32_t batch, const rc_table *tables,
                     int32_t num_tables, const int32_t *index, int32_t n,
                     int32_t *values) {
  int32_t b, k;
  for (b = 0; b < batch; ++b) {
    rc_decoder *dec = &decs[b];
    const int64_t offset = (int64_t)b * n;
    for (k = 0; k < n; ++k) {
      const int32_t t = index[offset + k];
      if (t < 0 || t >= num_tables) {
        if (dec->status == RC_OK) dec->status = RC_ERR_INDEX;
        values[offset + k] = 0;
      } else {
        decode_value(dec, &tables[t], &values[offset + k]);
      }
    }
  }
}

void rc_decoders_finish(const rc_decoder *decs, int32_t batch,
                        int32_t *status) {
  int32_t b;
  for (b = 0; b < batch; ++b) status[b] = rc_decoder_finish(&decs[b]);
}
