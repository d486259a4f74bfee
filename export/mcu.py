"""The microcontroller part of a bundle: `BUNDLE/mcu/`, C sources for a board.

    mcu/model_data.{h,c}        the int8 encoder, an aligned const array
    mcu/tfvaeclf_model.{h,c}    the frozen tables, the int8 output -> value
                                tables, fingerprint, shapes, arena size and
                                worst-case message size
    mcu/range_coder.{h,c}       the C99 range coder (tfvaeclf/edge/csrc)
    mcu/tfvaeclf_message.{h,c}  int8 latent -> one wire-format message
    mcu/main.cc                 example: TFLM, then the message writer
    mcu/tfvaeclf.mk             Makefile fragment
    mcu/README.md               for the board

The coder side is integer only: every float the Python edge computes from
an int8 output (dequantization, dither, rounding) is computed here, in
numpy float32 as the edge does, for all 256 outputs (see
tfvaeclf_message.h). The arena size is the smallest with which the PyPI
`tflite-micro` interpreter allocates and runs the model.
"""

import contextlib
import os
import shutil
import sys

import numpy as np
import tensorflow as tf

from tfvaeclf import cli, dither
from tfvaeclf.edge import range_coder

__all__ = ["MCU_DIR", "arena_size", "model_ops", "symbol_tables",
           "write_mcu"]

MCU_DIR = "mcu"
_CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "tfvaeclf", "edge", "csrc")
_COPIED = ("range_coder.h", "range_coder.c", "tfvaeclf_message.h",
           "tfvaeclf_message.c")
_NEVER = 1 << 24  # TFVAECLF_NEVER: the dither hash has 24 bits
_ARENA_ALIGN = 16
_ARENA_LIMIT = 1 << 26


def model_ops(flatbuffer):
  """The model's builtin op names ("CONV_2D", ...), in order of first use."""
  interpreter = tf.lite.Interpreter(model_content=flatbuffer)
  # pylint: disable=protected-access
  return list(dict.fromkeys(op["op_name"]
                            for op in interpreter._get_ops_details()))


@contextlib.contextmanager
def _quiet():
  """Silences TFLM's C-level prints of each failed allocation."""
  sys.stdout.flush()
  sys.stderr.flush()
  saved = [os.dup(1), os.dup(2)]
  with open(os.devnull, "w") as null:
    os.dup2(null.fileno(), 1)
    os.dup2(null.fileno(), 2)
  try:
    yield
  finally:
    for fd, copy in zip((1, 2), saved):
      os.dup2(copy, fd)
      os.close(copy)


def _runs(flatbuffer, size):
  from tflite_micro import runtime
  try:
    with _quiet():
      interpreter = runtime.Interpreter.from_bytes(flatbuffer,
                                                   arena_size=size)
      interpreter.invoke()
  except RuntimeError:
    return False
  return True


def arena_size(flatbuffer):
  """The smallest TFLM arena (a multiple of 16 bytes) that runs the model."""
  try:
    import tflite_micro  # noqa: F401  pylint: disable=unused-import
  except ImportError:
    raise cli.UserError("--mcu measures the TFLM arena with the tflite-micro "
                        "package: pip install -e .[mcu]") from None
  high = 10 * len(flatbuffer)  # tflite-micro's default
  while not _runs(flatbuffer, high):
    if high > _ARENA_LIMIT:
      raise cli.UserError(f"TFLM cannot run the int8 encoder in "
                          f"{_ARENA_LIMIT} bytes of arena")
    high *= 2
  low = 0  # fails; `high` runs
  while high - low > _ARENA_ALIGN:
    middle = (low + high) // 2 // _ARENA_ALIGN * _ARENA_ALIGN
    low, high = (low, middle) if _runs(flatbuffer, middle) else (middle, high)
  return high


def symbol_tables(scale, zero_point, dither_levels=None):
  """(value, step1, step2) of tfvaeclf_message.h for an int8 output.

  value[q + 128] is what the Python edge codes for output q without a
  dither, or with the dither's lowest u (-1/2); the coded value with the
  24-bit hash k is value + (k >= step1) + (k >= step2) (then clipped to
  the levels), found by bisection since it grows with k.
  """
  q = np.arange(-128, 128).astype(np.float32)
  latent = (q - np.float32(zero_point)) * np.float32(scale)
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


def _model_files(flatbuffer):
  header = f"""/* The int8 encoder ({len(flatbuffer)} bytes), for TFLM.
 * Generated by python -m export --mcu. */
#ifndef TFVAECLF_MODEL_DATA_H_
#define TFVAECLF_MODEL_DATA_H_

#ifdef __cplusplus
extern "C" {{
#endif

#define TFVAECLF_MODEL_DATA_LEN {len(flatbuffer)}
extern const unsigned char tfvaeclf_model_data[TFVAECLF_MODEL_DATA_LEN];

#ifdef __cplusplus
}}
#endif

#endif /* TFVAECLF_MODEL_DATA_H_ */
"""
  source = ('/* Generated by python -m export --mcu. */\n'
            '#include "model_data.h"\n\n'
            '/* TFLM reads the flatbuffer in place: 16-byte aligned. */\n' +
            _array("unsigned char", "tfvaeclf_model_data", list(flatbuffer),
                   per_line=16,
                   attributes="__attribute__((aligned(16)))\n"))
  return {"model_data.h": header, "model_data.c": source}


def _codec_files(fingerprint, stream, arrays, output, pixels, arena, ops):
  """tfvaeclf_model.{h,c} and the figures they state."""
  name = stream["name"]
  tables = range_coder.CdfTables(arrays[f"{name}/cdf"],
                                 arrays[f"{name}/cdf_offset"])
  shape = [int(d) for d in stream["shape"]]
  num_values = int(np.prod(shape))
  channels = tables.num_tables
  levels = stream.get("dither", {}).get("levels")
  quantization = output["quantization"]
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
  counter_bytes = 5 if levels is not None else 0
  max_message = 1 + counter_bytes + string_bytes + 4
  cdf_starts = np.concatenate([[0], np.cumsum([len(c) for c in tables.cdfs])])
  table_rows = ",\n  ".join(
      f"{{tfvaeclf_cdf + {int(start)}, {int(symbols)}, {int(offset)}, "
      f"{int(precision)}, {int(overflow)}}}"
      for start, symbols, offset, precision, overflow in zip(
          cdf_starts, tables.num_symbols, tables.offsets, tables.precision,
          tables.overflow))
  dithered = levels is not None
  key = (int(dither._mix(np.int64((stream["dither"]["seed"] + dither._GOLDEN)
                                  & 0xFFFFFFFF), np.right_shift))
         if dithered else 0)  # pylint: disable=protected-access
  shape_text = ", ".join(map(str, shape))
  kind = f"dithered (levels {levels})" if dithered else "factorized"
  header = f"""/* The frozen coder of one tfvaeclf model. Generated by
 * python -m export --mcu.
 *
 * Encoder side (codec fingerprint) {fingerprint.hex()}; stream "{name}",
 * {kind}.
 * Encoder: uint8 image ({", ".join(map(str, pixels["shape"]))}) -> int8 latent
 * ({shape_text}); TFLM ops: {", ".join(ops)}.
 *
 * Worst-case output: TFVAECLF_MAX_MESSAGE_BYTES (every value at the most
 * costly end of what the int8 output can give). Worst-case stack: see
 * tfvaeclf_message.h (a fixed frame, no recursion, no arrays).
 */
#ifndef TFVAECLF_MODEL_H_
#define TFVAECLF_MODEL_H_

#include <stdint.h>

#include "tfvaeclf_message.h"

#ifdef __cplusplus
extern "C" {{
#endif

#define TFVAECLF_IMAGE_BYTES {int(np.prod(pixels["shape"]))}
#define TFVAECLF_LATENT_VALUES {num_values}
#define TFVAECLF_DITHERED {int(dithered)}
/* Smallest TFLM arena that ran the encoder (tflite-micro, at export). */
#define TFVAECLF_ARENA_BYTES {arena}
#define TFVAECLF_MAX_MESSAGE_BYTES {max_message}

/* The model's coder; pass it to tfvaeclf_encode_message. */
extern const tfvaeclf_codec tfvaeclf_model_codec;
/* The encoder's input for each pixel value 0..255 (its uint8
 * quantization). */
extern const uint8_t tfvaeclf_pixel[256];

#ifdef __cplusplus
}}
#endif

#endif /* TFVAECLF_MODEL_H_ */
"""
  cdf = np.concatenate(tables.cdfs)
  parts = ['/* Generated by python -m export --mcu. */\n'
           '#include "tfvaeclf_model.h"\n',
           _array("uint8_t", "tfvaeclf_pixel", pixels["table"],
                  per_line=16),
           _array("uint8_t", "tfvaeclf_fingerprint", list(fingerprint),
                  attributes="static "),
           _array("int32_t", "tfvaeclf_cdf", cdf, attributes="static "),
           f"static const rc_table tfvaeclf_tables[{channels}] = {{\n"
           f"  {table_rows}\n}};\n",
           _array("int16_t", "tfvaeclf_value", value, per_line=16,
                  attributes="static ")]
  if dithered:
    parts += [_array("uint32_t", "tfvaeclf_step1", step1, per_line=8,
                     attributes="static "),
              _array("uint32_t", "tfvaeclf_step2", step2, per_line=8,
                     attributes="static ")]
  steps_refs = ("tfvaeclf_step1, tfvaeclf_step2" if dithered
                else "NULL, NULL")
  parts.append(
      "const tfvaeclf_codec tfvaeclf_model_codec = {\n"
      f"  tfvaeclf_fingerprint, tfvaeclf_tables, {channels}, {num_values},\n"
      f"  tfvaeclf_value, {steps_refs}, {key}u, {levels or 0}\n}};\n")
  figures = {"arena_bytes": arena, "max_message_bytes": max_message}
  return {"tfvaeclf_model.h": header,
          "tfvaeclf_model.c": "\n".join(parts)}, figures


_MAIN = """// Example: one image -> one message, on a board with TFLM.
// Generated by python -m export --mcu; adapt the image source and radio.
#include <cstdint>
#include <cstdio>

#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"

extern "C" {
#include "model_data.h"
#include "tfvaeclf_model.h"
}

namespace {

// The smallest arena the export measured (tflite-micro, 64-bit host; a
// 32-bit board's pointers are smaller).
alignas(16) uint8_t tensor_arena[TFVAECLF_ARENA_BYTES];
uint8_t message[TFVAECLF_MAX_MESSAGE_BYTES];

// Exactly the ops of the int8 encoder.
using OpResolver = tflite::MicroMutableOpResolver<@NUM_OPS@>;

TfLiteStatus AddOps(OpResolver& resolver) {
@ADD_OPS@
  return kTfLiteOk;
}

}  // namespace

// uint8 pixels (TFVAECLF_IMAGE_BYTES, H x W x C) -> message length in
// `message`, or < 0. `counter` is the message's dither index (dithered
// models; increment it per message, never repeat it).
int EncodeImage(tflite::MicroInterpreter& interpreter, const uint8_t* image,
                uint32_t counter) {
  TfLiteTensor* input = interpreter.input(0);
  for (int i = 0; i < TFVAECLF_IMAGE_BYTES; ++i) {
    input->data.uint8[i] = tfvaeclf_pixel[image[i]];
  }
  if (interpreter.Invoke() != kTfLiteOk) return -100;
  return tfvaeclf_encode_message(&tfvaeclf_model_codec,
                                 interpreter.output(0)->data.int8, counter,
                                 message, sizeof(message));
}

int main() {
  const tflite::Model* model = tflite::GetModel(tfvaeclf_model_data);
  static OpResolver resolver;
  if (AddOps(resolver) != kTfLiteOk) return 1;
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena,
                                              sizeof(tensor_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) return 1;
  static uint8_t image[TFVAECLF_IMAGE_BYTES];  // a black image: replace
  int length = EncodeImage(interpreter, image, 0);
  if (length < 0) return 1;
  for (int i = 0; i < length; ++i) printf("%02x", message[i]);
  printf("\\n");
  return 0;
}
"""

_MAKEFILE = """# tfvaeclf's coder for a board: include this fragment, then add
# $(TFVAECLF_SRCS) to your sources and $(TFVAECLF_INCLUDES) to CFLAGS.
# main.cc is an example that also needs TFLM (tflite-micro's Makefile or
# its CMake/Bazel rules); the coder itself needs only a C99 compiler.
TFVAECLF_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
TFVAECLF_SRCS := $(TFVAECLF_DIR)range_coder.c \\
  $(TFVAECLF_DIR)tfvaeclf_message.c $(TFVAECLF_DIR)tfvaeclf_model.c \\
  $(TFVAECLF_DIR)model_data.c
TFVAECLF_INCLUDES := -I$(TFVAECLF_DIR)
"""

_README = """# tfvaeclf on a microcontroller

Encoder side {fingerprint} (the codec fingerprint), {kind} coder.
Generated by `python -m export --mcu`.

The board runs the int8 encoder under TensorFlow Lite Micro, then
`tfvaeclf_encode_message` turns its int8 output into one message of the
wire format, byte for byte what the Python edge (`tfvaeclf.edge`) sends;
the server (`python -m tfvaeclf.codec classify` or
`export.server.BundleServer`) reads it.

| file | what |
| --- | --- |
| `model_data.{{h,c}}` | int8 encoder, {model_bytes} bytes, 16-byte aligned |
| `tfvaeclf_model.{{h,c}}` | frozen tables, fingerprint, shapes, figures |
| `range_coder.{{h,c}}`, `tfvaeclf_message.{{h,c}}` | C99 coder |
| `main.cc` | example: TFLM, then the coder |
| `tfvaeclf.mk` | Makefile fragment |

- TFLM ops (a `MicroMutableOpResolver<{num_ops}>`): {op_list}.
- Tensor arena: {arena_bytes} bytes (the smallest that ran, measured at
  export with the `tflite-micro` package on a 64-bit host).
- Message: at most {max_message_bytes} bytes (`TFVAECLF_MAX_MESSAGE_BYTES`).
- Input: uint8 pixels H x W x C, looked up in `tfvaeclf_pixel`.
{dither_note}
Build: `include tfvaeclf.mk`, add `$(TFVAECLF_SRCS)` and
`$(TFVAECLF_INCLUDES)`; the coder needs only `<stddef.h>`/`<stdint.h>`.
"""

_DITHER_NOTE = """- Dithered model: each message carries a counter, its dither
  index. Keep it in non-volatile memory and increment it per message;
  never reuse one.
"""


def _op_method(op):
  """"DEPTHWISE_CONV_2D" -> "AddDepthwiseConv2D" (TFLM's resolver)."""
  return "Add" + "".join(part if part[0].isdigit() else part.capitalize()
                         for part in op.split("_"))


def write_mcu(directory, fingerprint, streams, arrays, edge, flatbuffer):
  """Writes `directory/mcu/` for the one-stream coder `streams` (manifest
  entries) with tables `arrays` (tables.npz's), messages keyed by the codec
  `fingerprint`, and its int8 encoder `flatbuffer` described by `edge`
  (`encoder.describe`). Returns the figures for the manifest."""
  from tfvaeclf.edge import encoder as edge_encoder
  # pylint: disable=protected-access
  (stream,) = streams
  ops = model_ops(flatbuffer)
  arena = arena_size(flatbuffer)
  (image,) = edge["inputs"].values()
  quantization = image["quantization"]
  pixels = {"shape": image["shape"][1:], "table": edge_encoder._pixel_table({
      "dtype": np.uint8,
      "quantization_parameters": {"scales": [quantization["scale"]],
                                  "zero_points": [quantization["zero_point"]]}
  })}
  files = _model_files(flatbuffer)
  codec_files, figures = _codec_files(
      fingerprint, stream, arrays, edge["outputs"][stream["name"]], pixels,
      arena, ops)
  files.update(codec_files)
  add_ops = "\n".join(
      f"  if (resolver.{_op_method(op)}() != kTfLiteOk) return kTfLiteError;"
      for op in ops)
  files["main.cc"] = (_MAIN.replace("@NUM_OPS@", str(len(ops)))
                      .replace("@ADD_OPS@", add_ops))
  files["tfvaeclf.mk"] = _MAKEFILE
  figures.update(ops=ops, model_bytes=len(flatbuffer))
  files["README.md"] = _README.format(
      fingerprint=fingerprint.hex(),
      kind="dithered" if "dither" in stream else "factorized",
      num_ops=len(ops), op_list=", ".join(ops),
      dither_note=_DITHER_NOTE if "dither" in stream else "", **figures)
  out = os.path.join(directory, MCU_DIR)
  os.makedirs(out)
  for name, text in files.items():
    with open(os.path.join(out, name), "w") as f:
      f.write(text)
  for name in _COPIED:
    shutil.copyfile(os.path.join(_CSRC, name), os.path.join(out, name))
  return figures
