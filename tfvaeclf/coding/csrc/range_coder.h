/* A C99 range coder byte-identical to tensorflow-compression 2.14.1's
 * range-coding ops (create_range_encoder / entropy_encode_channel,
 * entropy_encode_index / entropy_encode_finalize and their decoders).
 *
 * Meant for microcontrollers as much as for the Linux edge and the server:
 * no malloc, no floating point, no recursion, no variable-length arrays, and
 * nothing beyond <stddef.h> and <stdint.h>. Every buffer is the caller's.
 *
 * Format (see tfvaeclf/coding/range_coder.py, the reference): TFC's 32-bit
 * range coder with 16-bit renormalization, carries delayed as TFC delays
 * them, and TFC's short termination. A table is a CDF `[0, ..., 2**p]` of
 * `num_symbols` bins; a value `v` is coded as the symbol `s = v - offset`.
 * With `overflow` set the last bin is an escape: `s < 0` or `s >= escape`
 * (escape = num_symbols - 1) is coded as the escape bin followed by
 * g (= -s if s < 0, else s - escape + 1) in Elias-gamma form as 1-bit
 * decisions: bit_length(g) - 1 zeros, the bits of g from the top, a sign.
 * Channel coding gives value k of a stream table k % num_tables; indexed
 * coding takes the table of each value from an index array.
 *
 * Worst-case output. Every coding step (a value's bin, or one Elias-gamma
 * decision) makes the coder emit at most one 16-bit digit, and termination
 * adds at most 2 bytes. A value coded directly is 1 step; an escaped one is
 * 1 + 2 * bit_length(g) <= 61 steps (g < 2**30, see RC_ERR_GAMMA). Hence
 * RC_MAX_BYTES below; RC_MAX_BYTES(n, 0) holds whenever no value escapes
 * (values inside their tables' range).
 *
 * Worst-case stack: no function recurses or puts arrays on the stack, so
 * every call has a fixed frame; the deepest chain (rc_decode_batch ->
 * rc_decode -> its per-value step -> one escape decision) takes under 400
 * bytes on x86-64 with gcc -O2 (gcc -fstack-usage), the rc_encoder or
 * rc_decoder state (under 64 bytes each) included.
 *
 * Decoding bytes from anywhere is safe: the work is bounded by the number of
 * values (each at most 1 + 62 steps: an escape code with more than 30 zeros
 * is an error, RC_ERR_ESCAPE) and never depends on what the bytes say
 * otherwise; nothing reads outside `data[0, length)` or loops longer.
 *
 * Implicit trailing bytes. The decoder reads 4 bytes, then 2 per
 * renormalization: 2 R + 4 for R renormalizations, the encoder's count too.
 * The encoder writes 2 bytes per renormalization, except that while its
 * interval straddles 2**32 (TFC's "state 1") it delays the digit that began
 * the straddle and counts the digits after it (all 0x00 or all 0xFF once
 * resolved). Its termination then leaves out:
 *   - not straddling, base == 0: the 4 bytes of the final value (all zero);
 *   - not straddling, base != 0: 2 or 3 of them (it writes 1 or 2);
 *   - straddling: 4 + 2 s + (2 - w) bytes, where s is the number of
 *     renormalizations since the straddle began and w (1 or 2) the bytes it
 *     writes of the delayed digit.
 * s has no bound: a stream whose last values keep the interval around
 * 2**32 for many renormalizations is valid and leaves as many zeros out
 * (rare for data drawn from the tables: none in 20,000 MNIST-like streams;
 * but any string whose decoder ends straddling reads as such a stream).
 * The decoder follows the encoder's state and counts the bytes the encoder
 * must have written so far (`need`); a string shorter than that needs
 * bytes past its end that no encoder leaves out: RC_ERR_PAST_END, as soon
 * as it shows. So a valid string reads at most 4 bytes past its end
 * outside a straddle, and 5 + 2 s at most within one.
 *
 * Tables must pass rc_check_tables (tables from TFC's entropy models do).
 */
#ifndef TFVAECLF_RANGE_CODER_H_
#define TFVAECLF_RANGE_CODER_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RC_PRECISION_MAX 16
/* Largest Elias-gamma value TFC's encoder terminates on is 2**30 - 1. */
#define RC_MAX_GAMMA ((((int64_t)1) << 30) - 1)
/* Most leading zeros of an escape code the decoder accepts (TFC's decoder
 * overflows a shift beyond this; its encoder writes at most 29). */
#define RC_MAX_ZEROS 30

/* Output bytes that suffice for a stream of `n` values of which at most `e`
 * escape: 2 + 2 n + 120 e (2 bytes per coding step, 2 of termination). */
#define RC_MAX_BYTES(n, e) \
  ((size_t)2 + (size_t)2 * (size_t)(n) + (size_t)120 * (size_t)(e))

/* Status codes: 0 is success, errors are negative. */
#define RC_OK 0
#define RC_ERR_ARG (-1)        /* bad argument: NULL buffer, negative size */
#define RC_ERR_TABLE (-2)      /* malformed table (see rc_check_tables) */
#define RC_ERR_INDEX (-3)      /* table index outside [0, num_tables) */
#define RC_ERR_RANGE (-4)      /* value outside a table without overflow */
#define RC_ERR_ZERO_PROB (-5)  /* value in a bin of zero probability */
#define RC_ERR_GAMMA (-6)      /* escape with g >= 2**30 (TFC would hang) */
#define RC_ERR_CAPACITY (-7)   /* output buffer too small */
#define RC_ERR_ESCAPE (-8)     /* escape code with more than 30 zeros */
#define RC_ERR_INT32 (-9)      /* decoded value overflows int32 */
#define RC_ERR_PAST_END (-10)  /* string too short for what it decodes to */
#define RC_ERR_FINAL (-11)     /* TFC's end-of-stream check failed */

/* One coding table. cdf[0] = 0 <= cdf[1] <= ... <= cdf[num_symbols] =
 * 1 << precision, precision in [1, 16]: TFC's lookup section without its
 * leading +-precision and padding.
 *
 * Where flash is short (a microcontroller's encoder), the same CDF may be
 * given in 16 bits instead, with cdf NULL: cdf16 holds cdf[0] ...
 * cdf[num_symbols - 1], and cdf[num_symbols] = 1 << precision is implied.
 * The encoder writes the same bytes from either; the decoder needs cdf
 * (RC_ERR_TABLE without it). */
typedef struct rc_table {
  const int32_t *cdf;   /* num_symbols + 1 entries, or NULL */
  int32_t num_symbols;  /* bins, the escape bin included; >= 1 */
  int32_t offset;       /* cdf_offset: value = symbol + offset */
  int16_t precision;    /* 1..16 */
  int16_t overflow;     /* nonzero: the last bin is an escape (TFC's p < 0) */
  const uint16_t *cdf16;  /* num_symbols entries; read only if cdf is NULL */
} rc_table;

/* RC_OK, or RC_ERR_TABLE if any table breaks the rules above (O(size)). */
int rc_check_tables(const rc_table *tables, int32_t num_tables);

/* A short English description of a status code (static storage). */
const char *rc_strerror(int status);

/* ---- Streaming encoder: one stream, values one at a time. ---------------
 * Errors are sticky: after one, rc_encoder_put does nothing and
 * rc_encoder_finish returns it. Nothing is written past out[capacity). */
typedef struct rc_encoder {
  uint8_t *out;
  uint64_t capacity;
  uint64_t length;   /* bytes emitted so far (may pass capacity: error) */
  uint64_t run;      /* delayed 0x00 / 0xFF bytes behind `pending` */
  uint32_t base;
  uint32_t size_minus1;
  uint32_t pending;  /* delayed 16-bit digit + 1, or 0 (TFC's delay_) */
  int status;
} rc_encoder;

void rc_encoder_init(rc_encoder *enc, uint8_t *out, int32_t capacity);
/* Codes `value` with `table`; returns RC_OK or the (sticky) error. */
int rc_encoder_put(rc_encoder *enc, const rc_table *table, int32_t value);
/* Terminates the stream: its length in bytes, or an error (< 0). */
int32_t rc_encoder_finish(rc_encoder *enc);

/* ---- Streaming decoder. ---------------------------------------------------
 * Reads only data[0, len). Errors are sticky; rc_decoder_get stores 0 in
 * *value after one. */
typedef struct rc_decoder {
  const uint8_t *data;
  int64_t length;
  int64_t position;  /* bytes read, the implicit zeros past the end included */
  int64_t need;      /* fewest bytes a valid string has, given the steps */
  int32_t straddling;  /* the interval straddles 2**32 (TFC's state 1) */
  uint32_t base;
  uint32_t size_minus1;
  uint32_t value;
  int status;
} rc_decoder;

void rc_decoder_init(rc_decoder *dec, const uint8_t *data, int32_t length);
/* Decodes one value with `table` into *value; RC_OK or the error. */
int rc_decoder_get(rc_decoder *dec, const rc_table *table, int32_t *value);
/* After the last value: RC_OK if the string ends as TFC's encoder ends a
 * stream, else RC_ERR_PAST_END (the string lacks bytes an encoder would
 * have written, see "Implicit trailing bytes" above), RC_ERR_FINAL (TFC's
 * sanity check: bytes left unread, or a final state TFC's encoder does not
 * leave), or an earlier error. */
int rc_decoder_finish(const rc_decoder *dec);

/* ---- One stream at once. ------------------------------------------------
 * `index` is NULL for channel coding (table k % num_tables for value k), or
 * holds the table of each of the `n` values. */

/* Returns the string's length (<= capacity) or an error (< 0). */
int32_t rc_encode(const rc_table *tables, int32_t num_tables,
                  const int32_t *index, const int32_t *values, int32_t n,
                  uint8_t *out, int32_t capacity);

/* Decodes n values into `values` (zeros after an error); returns RC_OK,
 * RC_ERR_FINAL (all values decoded, the end check failed) or an error. */
int rc_decode(const rc_table *tables, int32_t num_tables, const int32_t *index,
              const uint8_t *data, int32_t length, int32_t *values,
              int32_t n);

/* ---- Batches (one call codes many streams; for bindings). ----------------
 * values and index (or NULL) are (batch, n), C order. */

/* Stream b is written to out[ends[b - 1], ends[b]) (ends[-1] = 0). Returns
 * RC_OK, or the first error (RC_ERR_CAPACITY when `capacity` bytes do not
 * hold all streams), its stream in *failed. */
int rc_encode_batch(const rc_table *tables, int32_t num_tables,
                    const int32_t *index, const int32_t *values, int32_t batch,
                    int32_t n, uint8_t *out, int64_t capacity, int64_t *ends,
                    int32_t *failed);

/* One stream of rc_encode_streams: its tables and its (batch, n) values
 * (and table indexes, or NULL for channel coding), C order. */
typedef struct rc_stream {
  const rc_table *tables;
  int32_t num_tables;
  int32_t n;
  const int32_t *index;
  const int32_t *values;
} rc_stream;

/* rc_encode_batch of `count` streams of `batch` strings each in one call
 * (a conditional coder's hyper-latent and latent: the per-call cost of a
 * binding dominates one image). String b of stream s ends at
 * ends[s * batch + b], the strings written one after another, stream by
 * stream; the first error's string s * batch + b goes to *failed. */
int rc_encode_streams(const rc_stream *streams, int32_t count, int32_t batch,
                      uint8_t *out, int64_t capacity, int64_t *ends,
                      int32_t *failed);

/* String b is data[ends[b - 1], ends[b]); status[b] gets rc_decode's
 * result for it. */
void rc_decode_batch(const rc_table *tables, int32_t num_tables,
                     const int32_t *index, const uint8_t *data,
                     const int64_t *ends, int32_t batch, int32_t n,
                     int32_t *values, int32_t *status);

/* ---- Many streams, a part at a time (for bindings). ----------------------
 * decs[b] decodes string b = data[ends[b - 1], ends[b]); the caller keeps
 * `data` alive until the last call. Each rc_decoders_get call decodes the
 * next n values of every stream, value k of stream b with table
 * index[b * n + k], into values[b * n + k] (0 after an error, which is
 * sticky: an index outside [0, num_tables) is RC_ERR_INDEX). Decoding a
 * conditional latent slice by slice, each slice's tables depending on the
 * slices before, so reads one string per image. */
void rc_decoders_init(rc_decoder *decs, const uint8_t *data,
                      const int64_t *ends, int32_t batch);
void rc_decoders_get(rc_decoder *decs, int32_t batch, const rc_table *tables,
                     int32_t num_tables, const int32_t *index, int32_t n,
                     int32_t *values);
/* status[b] gets rc_decoder_finish(&decs[b]). */
void rc_decoders_finish(const rc_decoder *decs, int32_t batch,
                        int32_t *status);

#ifdef __cplusplus
}
#endif

#endif /* TFVAECLF_RANGE_CODER_H_ */
