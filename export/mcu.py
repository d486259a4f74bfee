"""The microcontroller part of a bundle: `BUNDLE/mcu/`, C sources for a board.

    mcu/model_data.{h,c}        the int8 encoder, an aligned const array
    mcu/slice_coder_data.{h,c}  float conditional coders: the float32 slice
                                coder (batch 1: TFLM needs static shapes;
                                also as mcu/slice_coder.tflite) and the
                                float of each int8 latent output it takes
    mcu/tfvaeclf_model.{h,c}    the frozen tables, the int8 output -> value
                                tables, fingerprint, shapes, arena size and
                                worst-case message size; an integer slice
                                predictor's const int8 layers and its work
                                space
    mcu/range_coder.{h,c}       the C99 range coder (tfvaeclf/coding/csrc)
    mcu/tfvaeclf_message.{h,c}  int8 latent (a conditional coder's: int8
                                hyper-latent and the slice coder's values
                                and indexes) -> one wire-format message
    mcu/int_layers.{h,c}, slice_predictor.{h,c},
    mcu/tfvaeclf_integer_message.{h,c}
                                an integer slice predictor's coder
                                ("indexed_integer" streams): int8 outputs
                                -> message, no float anywhere
    mcu/main.cc                 example: TFLM, then the message writer
    mcu/tfvaeclf.mk             Makefile fragment
    mcu/README.md               for the board

(main.cc, tfvaeclf.mk and README.md are filled in from `mcu_templates/`.)

The coder side is integer only: every float the Python edge computes from
an int8 output (dequantization, dither, rounding) is computed here, in
numpy float32 as the edge does, for all 256 outputs (see
tfvaeclf_message.h). The arena size is the smallest with which the PyPI
`tflite-micro` interpreter allocates and runs the model (each model).
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfvaeclf import cli
from tfvaeclf.coding import dither, native, range_coder, slice_predictor

__all__ = ["MCU_DIR", "SLICE_CODER", "arena_size", "coder_sources",
           "convert_board_model", "model_ops", "symbol_tables",
           "tensor_positions", "write_mcu"]

MCU_DIR = "mcu"
SLICE_CODER = "slice_coder.tflite"  # what slice_coder_data.c holds
_CSRC = os.path.join(os.path.dirname(os.path.abspath(range_coder.__file__)),
                     "csrc")
# main.cc, tfvaeclf.mk and README.md, with the parts each coder kind adds.
_TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                          "mcu_templates")
_COPIED = ("range_coder.h", "range_coder.c", "tfvaeclf_message.h",
           "tfvaeclf_message.c")
# What an integer slice predictor's bundle adds to them.
_INTEGER_COPIED = ("int_layers.h", "int_layers.c", "slice_predictor.h",
                   "slice_predictor.c", "tfvaeclf_integer_message.h",
                   "tfvaeclf_integer_message.c")
# The TFLM models' arrays: a board's, not the coder's.
_MODEL_SOURCES = ("model_data.c", "slice_coder_data.c")
_NEVER = 1 << 24  # TFVAECLF_NEVER: the dither hash has 24 bits
_LEB128_BYTES = 5  # of a counter or a length
_ARENA_ALIGN = 16
_ARENA_LIMIT = 1 << 26


def model_ops(*flatbuffers):
  """The models' builtin op names ("CONV_2D", ...), in order of first use."""
  ops = []
  for flatbuffer in flatbuffers:
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    # pylint: disable=protected-access
    ops += [op["op_name"] for op in interpreter._get_ops_details()]
  return list(dict.fromkeys(ops))


INDEXED, INTEGER = "indexed", "indexed_integer"  # conditional kinds
# The message writer of each kind (tfvaeclf_message.h,
# tfvaeclf_integer_message.h).
_WRITERS = {None: "tfvaeclf_encode_message",
            INDEXED: "tfvaeclf_encode_conditional_message",
            INTEGER: "tfvaeclf_encode_integer_message"}


def _conditional(plan):
  """How the MCU coder runs `plan`: None for one channel stream, else the
  type of the stream after a channel stream it is conditional on (INDEXED:
  a float32 slice coder's, INTEGER: an integer slice predictor's);
  UserError for any other plan."""
  types = [stream.TABLES for stream in plan]
  if types == ["channel"]:
    return None
  if (len(types) == 2 and types[0] == "channel"
      and types[1] in (INDEXED, INTEGER) and plan[1].on == plan[0].name):
    return types[1]
  raise cli.UserError(
      "the MCU coder runs one channel stream, or a channel stream then an "
      f"indexed stream on it, not this coder's ({', '.join(types)})")


def coder_sources(directory):
  """The C sources of the coder in the MCU dir `directory` (without the
  TFLM models' arrays and the example main.cc), sorted."""
  return sorted(name for name in os.listdir(directory)
                if name.endswith(".c") and name not in _MODEL_SOURCES)


def convert_board_model(coder, latent_shape, name):
  """The float32 board model `name` of `coder` (its slice coder) for TFLM,
  whose kernels need static shapes: for one image."""
  from . import encoder
  return encoder.convert_function(
      coder.board_functions(latent_shape, batch_size=1)[name])


def tensor_positions(flatbuffer):
  """{"inputs"/"outputs": {signature name: position}}: where TFLM, which
  knows no signatures, finds each named tensor (`input(i)`/`output(i)`)."""
  interpreter = tf.lite.Interpreter(model_content=flatbuffer)
  # pylint: disable=protected-access
  (signature,) = interpreter._get_full_signature_list().values()
  positions = {}
  for kind, details in (("inputs", interpreter.get_input_details()),
                        ("outputs", interpreter.get_output_details())):
    order = [detail["index"] for detail in details]
    positions[kind] = {name: order.index(index)
                       for name, index in signature[kind].items()}
  return positions


# Runs a model (stdin) in an arena of argv[1] bytes, in a child process:
# TFLM's Python wrapper may crash, not raise, when an arena is too small.
_PROBE = """
import sys
from tflite_micro import runtime
interpreter = runtime.Interpreter.from_bytes(sys.stdin.buffer.read(),
                                             arena_size=int(sys.argv[1]))
interpreter.invoke()
"""


def _runs(flatbuffer, size):
  return subprocess.run([sys.executable, "-c", _PROBE, str(size)],
                        input=flatbuffer, capture_output=True,
                        check=False).returncode == 0


def arena_size(flatbuffer):
  """The smallest TFLM arena (a multiple of 16 bytes) that runs the model
  (on zero inputs)."""
  try:
    import tflite_micro  # noqa: F401  pylint: disable=unused-import
  except ImportError:
    raise cli.UserError("--mcu measures the TFLM arena with the tflite-micro "
                        "package: pip install -e .[mcu]") from None
  high = 10 * len(flatbuffer)  # tflite-micro's default
  while not _runs(flatbuffer, high):
    if high > _ARENA_LIMIT:
      raise cli.UserError(f"TFLM cannot run the exported model in "
                          f"{_ARENA_LIMIT} bytes of arena")
    high *= 2
  low = 0  # fails; `high` runs
  while high - low > _ARENA_ALIGN:
    middle = (low + high) // 2 // _ARENA_ALIGN * _ARENA_ALIGN
    low, high = (low, middle) if _runs(flatbuffer, middle) else (middle, high)
  return high


def _int8_values(quantization):
  """What each int8 output q = -128..127 stands for, in float32 as the
  Python edge dequantizes it: (q - zero_point) * scale."""
  q = np.arange(-128, 128).astype(np.float32)
  return (q - np.float32(quantization["zero_point"])) * np.float32(
      quantization["scale"])


def symbol_tables(scale, zero_point, dither_levels=None):
  """(value, step1, step2) of tfvaeclf_message.h for an int8 output.

  value[q + 128] is what the Python edge codes for output q without a
  dither, or with the dither's lowest u (-1/2); the coded value with the
  24-bit hash k is value + (k >= step1) + (k >= step2) (then clipped to
  the levels), found by bisection since it grows with k.
  """
  latent = _int8_values({"scale": scale, "zero_point": zero_point})
  if dither_levels is None:
    return range_coder.quantize(latent), None, None

  def coded(k):  # as dither.np_dither and the edge's quantizer compute it
    u = k.astype(np.float32) * np.float32(2.**-24) - np.float32(.5)
    return range_coder.quantize(latent + u)

  value = coded(np.zeros(256, np.int64))
  steps = []
  for target in (value + 1, value + 2):
    low, high = np.zeros(256, np.int64), np.full(256, _NEVER, np.int64)
    while np.any(low < high):
      middle = (low + high) // 2
      reached = coded(np.minimum(middle, _NEVER - 1)) >= target
      reached &= middle < _NEVER
      high = np.where(reached, middle, high)
      low = np.where(reached | (low >= high), low, middle + 1)
    steps.append(high)
  if np.any(coded(np.full(256, _NEVER - 1)) > value + 2):
    raise AssertionError("the dithered value spans more than 3 integers")
  return value, steps[0], steps[1]


def _steps(table_values, tables):
  """Coding steps of the costliest value in [low, high] for each table."""
  worst = []
  for t, (low, high) in enumerate(table_values):
    escape = int(tables.num_symbols[t]) - 1
    costs = []
    for v in (low, high):
      s = v - int(tables.offsets[t])
      if not tables.overflow[t] or 0 <= s < escape:
        costs.append(1)
      else:
        g = -s if s < 0 else s - escape + 1
        costs.append(1 + 2 * int(g).bit_length())
    worst.append(max(costs))
  return worst


def _array(ctype, name, values, per_line=12, attributes=""):
  values = [str(int(v)) for v in np.reshape(values, -1)]
  lines = [", ".join(values[i:i + per_line])
           for i in range(0, len(values), per_line)]
  body = ",\n  ".join(lines)
  return (f"{attributes}const {ctype} {name}[{len(values)}] = {{\n"
          f"  {body}\n}};\n")


def _model_files(flatbuffer, stem, what, extra_header="", extra_source=""):
  """`stem`.{h,c}: the model `flatbuffer` as the aligned array
  tfvaeclf_`stem`."""
  guard, symbol = f"TFVAECLF_{stem.upper()}_H_", f"tfvaeclf_{stem}"
  length = f"{symbol.upper()}_LEN"
  header = f"""/* {what} ({len(flatbuffer)} bytes), for TFLM.
 * Generated by python -m export --mcu. */
#ifndef {guard}
#define {guard}

#ifdef __cplusplus
extern "C" {{
#endif

#define {length} {len(flatbuffer)}
extern const unsigned char {symbol}[{length}];
{extra_header}
#ifdef __cplusplus
}}
#endif

#endif /* {guard} */
"""
  source = (f'/* Generated by python -m export --mcu. */\n'
            f'#include "{stem}.h"\n\n'
            '/* TFLM reads the flatbuffer in place: 16-byte aligned. */\n' +
            _array("unsigned char", symbol, list(flatbuffer), per_line=16,
                   attributes="__attribute__((aligned(16)))\n") +
            extra_source)
  return {f"{stem}.h": header, f"{stem}.c": source}


def _cdf_tables(prefix, tables):
  """C text of `tables` (a range_coder.CdfTables): {prefix}_tables, whose
  CDFs are 16-bit (`rc_table.cdf16`, the last entry of each implied): half
  the flash of int32 ones, the same bytes."""
  cdfs = [c[:-1] for c in tables.cdfs]
  cdf_starts = np.concatenate([[0], np.cumsum([len(c) for c in cdfs])])
  rows = ",\n  ".join(
      f"{{NULL, {int(symbols)}, {int(offset)}, {int(precision)}, "
      f"{int(overflow)}, {prefix}_cdf16 + {int(start)}}}"
      for start, symbols, offset, precision, overflow in zip(
          cdf_starts, tables.num_symbols, tables.offsets, tables.precision,
          tables.overflow))
  return [_array("uint16_t", f"{prefix}_cdf16", np.concatenate(cdfs),
                 attributes="static "),
          f"static const rc_table {prefix}_tables[{tables.num_tables}] = "
          f"{{\n  {rows}\n}};\n"]


def _read_tables(arrays, name):
  return range_coder.CdfTables(arrays[f"{name}/cdf"],
                               arrays[f"{name}/cdf_offset"])


def _channel_codec(symbol, prefix, stream, arrays, quantization):
  """C text of the tfvaeclf_codec `symbol` of a table-per-channel stream,
  and its string's worst-case bytes."""
  tables = _read_tables(arrays, stream["name"])
  num_values = int(np.prod(stream["shape"]))
  channels = tables.num_tables
  levels = stream.get("dither", {}).get("levels")
  value, step1, step2 = symbol_tables(
      quantization["scale"], quantization["zero_point"], levels)
  if np.abs(value).max() > 2**15 - 3:
    raise cli.UserError("the int8 encoder's output scale is too large for "
                        "the MCU coder's int16 value table")
  if levels is None:
    low, high = int(value.min()), int(value.max())
  else:
    low, high = max(0, int(value.min())), min(levels - 1, int(value.max()) + 2)
  steps = _steps([(low, high)] * channels, tables)
  string_bytes = 2 + 2 * sum(steps[k % channels] for k in range(num_values))
  dithered = levels is not None
  key = (int(dither._mix(np.int64((stream["dither"]["seed"] + dither._GOLDEN)
                                  & 0xFFFFFFFF), np.right_shift))
         if dithered else 0)  # pylint: disable=protected-access
  parts = _cdf_tables(prefix, tables) + [
      _array("int16_t", f"{prefix}_value", value, per_line=16,
             attributes="static ")]
  steps_refs = "NULL, NULL"
  if dithered:
    parts += [_array("uint32_t", f"{prefix}_step{i}", step, per_line=8,
                     attributes="static ")
              for i, step in ((1, step1), (2, step2))]
    steps_refs = f"{prefix}_step1, {prefix}_step2"
  parts.append(
      f"const tfvaeclf_codec {symbol} = {{\n"
      f"  tfvaeclf_fingerprint, {prefix}_tables, {channels}, {num_values},\n"
      f"  {prefix}_value, {steps_refs}, {key}u, {levels or 0}\n}};\n")
  return parts, string_bytes


def _conditional_codec(stream, arrays, quantization, integer):
  """C text of the latent half of a conditional coder (`integer`: one whose
  integer slice predictor `_predictor_parts` wraps it), its values' bound
  and its string's worst-case bytes when they keep to it."""
  tables = _read_tables(arrays, stream["name"])
  num_values = int(np.prod(stream["shape"]))
  latent = symbol_tables(quantization["scale"], quantization["zero_point"])[0]
  # A value is round(y - loc): y within what the int8 output can give, and
  # loc too (a float slice coder's) or within the integer predictor's clip.
  loc_bound = (-slice_predictor.LOC_LIMITS[0] // slice_predictor.LOC_UNITS
               if integer else int(np.abs(latent).max()))
  bound = int(np.abs(latent).max()) + loc_bound + 1
  steps = _steps([(-bound, bound)] * tables.num_tables, tables)
  string_bytes = 2 + 2 * max(steps) * num_values
  name = "tfvaeclf_latent" if integer else "tfvaeclf_model_codec"
  parts = _cdf_tables("tfvaeclf_latent", tables) + [
      f"{'static ' if integer else ''}"
      f"const tfvaeclf_conditional_codec {name} = {{\n"
      f"  &tfvaeclf_hyper_codec, tfvaeclf_latent_tables, "
      f"{tables.num_tables}, {num_values}\n}};\n"]
  return parts, bound, string_bytes


def _c_int(value):
  """An int32 as C text (INT32_MIN is not a literal)."""
  return "(-2147483647 - 1)" if value == -2**31 else str(int(value))


def _predictor_parts(predictor, hyper_shape, latent_shape, quantization):
  """C text of an integer slice predictor (`predictor`, for a hyper-latent
  and a latent of shapes `hyper_shape`, `latent_shape`) as
  slice_predictor.h's const structures, the int8 latent's y in 1/65536,
  the work space and the tfvaeclf_integer_codec tfvaeclf_model_codec;
  and the work space's bytes."""
  groups = [predictor.hyper, *predictor.slices]
  parts, rows = [], []
  for i, layer in enumerate(layer for group in groups for layer in group):
    kernel = layer["kernel"]
    parts += [_array("int8_t", f"tfvaeclf_kernel{i}", kernel, per_line=16,
                     attributes="static "),
              _array("int32_t", f"tfvaeclf_bias{i}", layer["bias"],
                     attributes="static "),
              _array("int32_t", f"tfvaeclf_divisor{i}", layer["divisor"],
                     attributes="static ")]
    rows.append(
        f"{{tfvaeclf_kernel{i}, tfvaeclf_bias{i}, tfvaeclf_divisor{i}, "
        + ", ".join(str(d) for d in kernel.shape)
        + f", {layer['stride']}, {int(layer['transpose'])}, "
        f"{_c_int(layer['low'])}, {_c_int(layer['high'])}}}")
  latent = _int8_values(quantization)
  scratch = native.slice_scratch_size(predictor, hyper_shape[:2],
                                      latent_shape[:2])
  work = (int(np.prod(hyper_shape)) + 3 * int(np.prod(latent_shape))
          + scratch)
  rows_text = ",\n  ".join(rows)
  parts += [
      f"static const sp_layer tfvaeclf_layers[{len(rows)}] = {{\n"
      f"  {rows_text}\n}};\n",
      _array("int32_t", "tfvaeclf_num_layers", [len(g) for g in groups],
             attributes="static "),
      _array("int32_t", "tfvaeclf_slice_sizes", predictor.slice_sizes,
             attributes="static "),
      "static const sp_predictor tfvaeclf_predictor = {\n"
      "  tfvaeclf_layers, tfvaeclf_num_layers, tfvaeclf_slice_sizes, "
      f"{len(predictor.slices)}, {predictor.num_scales},\n"
      f"  {hyper_shape[0]}, {hyper_shape[1]}, {latent_shape[0]}, "
      f"{latent_shape[1]}\n}};\n",
      _array("int32_t", "tfvaeclf_latent_units",
             slice_predictor.latent_units(latent), per_line=8,
             attributes="static "),
      f"static int32_t tfvaeclf_work[{work}];\n",
      "const tfvaeclf_integer_codec tfvaeclf_model_codec = {\n"
      "  &tfvaeclf_latent, &tfvaeclf_predictor, tfvaeclf_latent_units, "
      f"tfvaeclf_work, {work}\n}};\n"]
  return parts, 4 * work


def _codec_files(fingerprint, streams, conditional, arrays, outputs, pixels,
                 defines, ops, predictor=None):
  """tfvaeclf_model.{h,c} and the message's worst-case bytes. `outputs`:
  the int8 encoder's, by stream name; `defines`: (name, value, comment) of
  the models the header also states; `predictor`: an INTEGER conditional
  coder's `_predictor_parts`."""
  parts = ['/* Generated by python -m export --mcu. */\n'
           '#include "tfvaeclf_model.h"\n',
           _array("uint8_t", "tfvaeclf_pixel", pixels["table"],
                  per_line=16),
           _array("uint8_t", "tfvaeclf_fingerprint", list(fingerprint),
                  attributes="static ")]
  first = streams[0]
  codec_parts, string_bytes = _channel_codec(
      "tfvaeclf_hyper_codec" if conditional else "tfvaeclf_model_codec",
      "tfvaeclf_hyper" if conditional else "tfvaeclf", first, arrays,
      outputs[first["name"]]["quantization"])
  parts += codec_parts
  dithered = "dither" in first
  values = [("TFVAECLF_LATENT_VALUES", int(np.prod(streams[-1]["shape"])),
             "")]
  if conditional:
    latent_parts, bound, latent_bytes = _conditional_codec(
        streams[1], arrays, outputs[streams[1]["name"]]["quantization"],
        conditional == INTEGER)
    parts += latent_parts + (predictor or [])
    string_bytes += latent_bytes
    values = [("TFVAECLF_HYPER_VALUES", int(np.prod(first["shape"])), ""),
              *values,
              ("TFVAECLF_LATENT_VALUE_BOUND", bound,
               "TFVAECLF_MAX_MESSAGE_BYTES holds if every value the slice "
               "coder gives has |value| <= this (y and its predicted mean "
               "within the int8 output's range, or the integer "
               "predictor's); if not, the coder returns RC_ERR_CAPACITY, "
               "never writing past the buffer")]
    kind = "conditional (hyper-latent, then indexed latent)"
    codec_type = "tfvaeclf_conditional_codec"
    if conditional == INTEGER:
      kind = ("conditional (hyper-latent, then indexed latent) with an "
              "integer slice predictor")
      codec_type = "tfvaeclf_integer_codec"
  else:
    kind = (f"dithered (levels {first['dither']['levels']})" if dithered
            else "factorized")
    codec_type = "tfvaeclf_codec"
  # Kind, counter or hyper-latent length, CRC.
  max_message = (1 + (_LEB128_BYTES if dithered or conditional else 0) +
                 string_bytes + 4)
  define_lines = "\n".join(
      (f"/* {_wrap(comment)} */\n" if comment else "") +
      f"#define {name} {value}"
      for name, value, comment in [
          ("TFVAECLF_IMAGE_BYTES", int(np.prod(pixels["shape"])), ""),
          ("TFVAECLF_CONDITIONAL", int(conditional is not None), ""),
          ("TFVAECLF_INTEGER_PREDICTOR", int(conditional == INTEGER), ""),
          *values, ("TFVAECLF_DITHERED", int(dithered), ""), *defines,
          ("TFVAECLF_MAX_MESSAGE_BYTES", max_message, "")])
  hyper_extern = ("/* The hyper-latent's coder: value[q + 128] is the coded "
                  "value of int8\n * output q, the slice coder's z_hat "
                  "input. */\n"
                  "extern const tfvaeclf_codec tfvaeclf_hyper_codec;\n"
                  if conditional else "")
  header = f"""/* The frozen coder of one tfvaeclf model. Generated by
 * python -m export --mcu.
 *
 * {_wrap(f"Encoder side (codec fingerprint) {fingerprint.hex()}; streams "
         f"{_shapes_text(streams)}, {kind}.")}
 * Image: uint8 ({", ".join(map(str, pixels["shape"]))}); TFLM ops:
 * {_wrap(", ".join(ops))}.
 *
 * Worst-case output: TFVAECLF_MAX_MESSAGE_BYTES (every value at the most
 * costly end of what the int8 output can give). Worst-case stack: see
 * tfvaeclf_message.h (a fixed frame, no recursion, no arrays).
 */
#ifndef TFVAECLF_MODEL_H_
#define TFVAECLF_MODEL_H_

#include <stdint.h>

#include "{"tfvaeclf_integer_message.h" if conditional == INTEGER
             else "tfvaeclf_message.h"}"

#ifdef __cplusplus
extern "C" {{
#endif

{define_lines}

/* The model's coder; pass it to {_WRITERS[conditional]}. */
extern const {codec_type} tfvaeclf_model_codec;
{hyper_extern}/* The encoder's input for each pixel value 0..255 (its uint8
 * quantization). */
extern const uint8_t tfvaeclf_pixel[256];

#ifdef __cplusplus
}}
#endif

#endif /* TFVAECLF_MODEL_H_ */
"""
  return {"tfvaeclf_model.h": header,
          "tfvaeclf_model.c": "\n".join(parts)}, max_message


def _shapes_text(streams):
  return ", ".join(f'"{s["name"]}" ({", ".join(map(str, s["shape"]))})'
                   for s in streams)


def _wrap(text, width=72):
  """`text` in lines of a C comment."""
  lines, line = [], ""
  for word in text.split():
    if line and len(line) + 1 + len(word) > width:
      lines.append(line)
      line = word
    else:
      line = f"{line} {word}" if line else word
  return "\n * ".join(lines + [line])


def _template(name):
  """The text of `mcu_templates/name`, its bytes as they are."""
  with open(os.path.join(_TEMPLATES, name), encoding="utf-8",
            newline="") as f:
    return f.read()


def _main(ops, conditional):
  """main.cc: TFLM runs the model(s), then the coder writes the message."""
  add_ops = "\n".join(
      f"  if (resolver.{_op_method(op)}() != kTfLiteOk) return kTfLiteError;"
      for op in ops)
  includes = ['"model_data.h"', '"tfvaeclf_model.h"']
  slice_coder = conditional == INDEXED
  if slice_coder:
    includes.insert(1, '"slice_coder_data.h"')
  encode_image = {None: "encode_image.cc",
                  INDEXED: "encode_image_conditional.cc",
                  INTEGER: "encode_image_integer.cc"}[conditional]
  fields = {
      "@INCLUDES@": "".join(f"#include {name}\n" for name in includes),
      "@GLOBALS@": ("alignas(16) uint8_t slice_arena["
                    "TFVAECLF_SLICE_ARENA_BYTES];\n" if slice_coder else ""),
      "@WHICH@": ("the int8 encoder and the slice coder" if slice_coder
                  else "the int8 encoder"),
      "@NUM_OPS@": str(len(ops)), "@ADD_OPS@": add_ops,
      "@ENCODE_IMAGE@": _template(encode_image),
      "@SETUP@": _template("setup_conditional.cc") if slice_coder else "",
      "@ARGS@": {None: "interpreter, image, 0",
                 INDEXED: "interpreter, slice_coder, image",
                 INTEGER: "interpreter, image"}[conditional]}
  text = _template("main.cc")
  for field, value in fields.items():
    text = text.replace(field, value)
  return text


# TFLM's resolver methods whose names the rule below does not give.
_OP_METHODS = {"BATCH_MATMUL": "AddBatchMatMul", "CUMSUM": "AddCumSum",
               "PADV2": "AddPadV2",
               "UNIDIRECTIONAL_SEQUENCE_LSTM":
                   "AddUnidirectionalSequenceLSTM"}


def _op_method(op):
  """"DEPTHWISE_CONV_2D" -> "AddDepthwiseConv2D" (TFLM's resolver)."""
  if op in _OP_METHODS:
    return _OP_METHODS[op]
  return "Add" + "".join(part if part[0].isdigit() else part.capitalize()
                         for part in op.split("_"))


def _float_array(name, values):
  """A const float array, each value exact (C99 hex floats)."""
  body = ",\n  ".join(f"{float(v).hex()}f" for v in
                       np.asarray(values, np.float32))
  return f"const float {name}[{len(values)}] = {{\n  {body}\n}};\n"


def _slice_coder_files(slice_coder, quantization):
  """slice_coder_data.{h,c}: the float32 slice coder, and the float its
  latent input takes for each int8 output."""
  latent = _int8_values(quantization)
  return _model_files(
      slice_coder, "slice_coder_data", "The float32 slice coder",
      extra_header=("/* The slice coder's latent input for int8 output q: "
                    "[q + 128]. */\n"
                    "extern const float tfvaeclf_latent_input[256];\n"),
      extra_source="\n" + _float_array("tfvaeclf_latent_input", latent))


def write_mcu(directory, fingerprint, plan, arrays, edge, flatbuffer, coder,
              latent_shape):
  """Writes `directory/mcu/` for the stream `plan` of `coder` (for latents
  of spatial shape `latent_shape`) with tables `arrays` (tables.npz's),
  messages keyed by the codec `fingerprint`, and its int8 encoder
  `flatbuffer` described by `edge` (`encoder.describe`); an indexed
  stream's slice coder too, converted for one image. Returns the figures
  for the manifest; UserError (one line) for a plan the MCU coder cannot
  run."""
  from tfvaeclf.coding import bundle
  from tfvaeclf.coding import streams as stream_types
  from tfvaeclf.edge import encoder as edge_encoder
  # pylint: disable=protected-access
  conditional = _conditional(plan)
  streams = stream_types.manifest_entries(plan)
  slice_coder = (convert_board_model(coder, latent_shape,
                                     plan[1].board_model)
                 if conditional == INDEXED else None)
  models = [flatbuffer] + ([slice_coder] if slice_coder else [])
  ops = model_ops(*models)
  arenas = [arena_size(model) for model in models]
  (image,) = edge["inputs"].values()
  quantization = image["quantization"]
  pixels = {"shape": image["shape"][1:], "table": edge_encoder.pixel_table({
      "dtype": np.uint8,
      "quantization_parameters": {"scales": [quantization["scale"]],
                                  "zero_points": [quantization["zero_point"]]}
  })}
  defines = [("TFVAECLF_ARENA_BYTES", arenas[0],
              "Smallest TFLM arenas that ran the models (tflite-micro, at "
              "export).")]
  files = _model_files(flatbuffer, "model_data", "The int8 encoder")
  predictor = work_bytes = None
  if conditional:
    hyper, latent = (stream["name"] for stream in streams)
    encoder_at = tensor_positions(flatbuffer)["outputs"]
    defines += [("TFVAECLF_ENCODER_HYPER_OUTPUT", encoder_at[hyper],
                 "Where TFLM finds each tensor: output(i), input(i)."),
                ("TFVAECLF_ENCODER_LATENT_OUTPUT", encoder_at[latent], "")]
  if conditional == INDEXED:
    slice_at = tensor_positions(slice_coder)
    defines += [
        ("TFVAECLF_SLICE_ARENA_BYTES", arenas[1], ""),
        ("TFVAECLF_SLICE_HYPER_INPUT",
         slice_at["inputs"][bundle.HYPER_INPUT], ""),
        ("TFVAECLF_SLICE_LATENT_INPUT",
         slice_at["inputs"][bundle.LATENT_INPUT], ""),
        ("TFVAECLF_SLICE_VALUES_OUTPUT", slice_at["outputs"][bundle.VALUES],
         ""),
        ("TFVAECLF_SLICE_INDEXES_OUTPUT",
         slice_at["outputs"][bundle.INDEXES], "")]
    files.update(_slice_coder_files(
        slice_coder, edge["outputs"][latent]["quantization"]))
  if conditional == INTEGER:
    try:
      predictor, work_bytes = _predictor_parts(
          plan[1].predictor, streams[0]["shape"], streams[1]["shape"],
          edge["outputs"][latent]["quantization"])
    except (OSError, ValueError) as e:
      raise cli.UserError(f"the MCU coder's slice predictor: {e}") from None
    defines.append(("TFVAECLF_WORK_BYTES", work_bytes,
                    "RAM the integer slice predictor works in "
                    "(tfvaeclf_model.c's static tfvaeclf_work)."))
  codec_files, max_message = _codec_files(
      fingerprint, streams, conditional, arrays, edge["outputs"], pixels,
      defines, ops, predictor)
  files.update(codec_files)
  files["main.cc"] = _main(ops, conditional)
  copied = _COPIED + (_INTEGER_COPIED if conditional == INTEGER else ())
  files["tfvaeclf.mk"] = _template("tfvaeclf.mk").replace(
      "@SOURCES@", " \\\n  ".join(
          f"$(TFVAECLF_DIR){name}" for name in
          [n for n in copied if n.endswith(".c")] + ["tfvaeclf_model.c"]
          + list(_MODEL_SOURCES[:len(models)])))
  figures = {"arena_bytes": arenas[0], "max_message_bytes": max_message,
             "ops": ops, "model_bytes": len(flatbuffer)}
  if slice_coder:
    figures.update(slice_arena_bytes=arenas[1],
                   slice_coder_bytes=len(slice_coder))
  if work_bytes:
    figures.update(work_bytes=work_bytes)
  dithered = "dither" in streams[0]
  files["README.md"] = _template("README.md").format(
      fingerprint=fingerprint.hex(),
      kind=("conditional" if conditional == INDEXED else
            "conditional, integer slice predictor" if conditional else
            "dithered" if dithered else "factorized"),
      runs=("the int8 encoder and the float32 slice coder" if slice_coder
            else "the int8 encoder"),
      writer=_WRITERS[conditional],
      what={None: "its int8 output",
            INDEXED: "the hyper-latent and the slice coder's values and "
                     "indexes",
            INTEGER: "its int8 hyper-latent and latent (the integer slice "
                     "predictor choosing the tables)"}[conditional],
      slice_row={
          None: "",
          INDEXED: f"| `slice_coder_data.{{h,c}}` | float32 slice coder, "
                   f"{len(slice_coder or b'')} bytes, 16-byte aligned |\n",
          INTEGER: "| `int_layers.{h,c}`, `slice_predictor.{h,c}`, "
                   "`tfvaeclf_integer_message.{h,c}` | the integer slice "
                   "predictor (its int8 layers are const in "
                   f"`tfvaeclf_model.c`; {work_bytes} bytes of RAM to work "
                   "in) and its message writer |\n"}[conditional],
      arenas=(f"{arenas[0]} bytes (encoder), {arenas[1]} bytes (slice coder)"
              if slice_coder else f"{arenas[0]} bytes"),
      num_ops=len(ops), op_list=", ".join(ops),
      note={None: _template("dither_note.md") if dithered else "",
            INDEXED: _template("conditional_note.md"),
            INTEGER: _template("integer_note.md")}[conditional], **figures)
  out = os.path.join(directory, MCU_DIR)
  os.makedirs(out)
  for name, text in files.items():
    with open(os.path.join(out, name), "w") as f:
      f.write(text)
  if slice_coder:
    with open(os.path.join(out, SLICE_CODER), "wb") as f:
      f.write(slice_coder)
  for name in copied:
    shutil.copyfile(os.path.join(_CSRC, name), os.path.join(out, name))
  return figures
