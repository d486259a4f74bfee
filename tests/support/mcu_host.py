"""A bundle's `mcu/` run on this host, for tests and tools/bench_mcu.py:
its C coder built by gcc (tools/mcu/harness.c), its int8 encoder under TFLM
(the `tflite-micro` package, with the arena the export measured) and under
LiteRT (as the Linux edge runs it)."""

import json
import os
import subprocess

import numpy as np
from tflite_micro import runtime as tflm

from tfvaeclf.coding import bundle
from tfvaeclf.edge import EdgeEncoder, encoder as edge_encoder
from tfvaeclf.edge.interpreter import load_interpreter
from tfvaeclf.serve.bundle_server import BundleServer

from tfvaeclf.export import mcu

__all__ = ["CFLAGS", "build_harness", "c_conditional_messages",
           "c_integer_messages", "c_messages", "edge_conditional_messages",
           "fixed_conditional_header", "fixed_integer_header",
           "fixed_latents_header", "int8_model", "litert_conditional",
           "litert_outputs", "read_manifest", "server_classes",
           "tflm_outputs", "tflm_slice_coder"]

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_HARNESS = os.path.join(_REPO, "tools", "mcu", "harness.c")
# -Wconversion is left out: it warns on int8 -> int arithmetic C99 defines.
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror")


def build_harness(bundle_dir, program):
  """Builds `program`: tools/mcu/harness.c with the bundle's coder."""
  source = os.path.join(bundle_dir, mcu.MCU_DIR)
  sources = [os.path.join(source, name)
             for name in mcu.coder_sources(source)]
  subprocess.run(["gcc", *CFLAGS, f"-I{source}", _HARNESS, *sources, "-o",
                  program], check=True)


def c_messages(program, latents, first_counter=0):
  """int8 latents (N, ...) -> the messages `program` (`build_harness`)
  writes, with counters from `first_counter`."""
  return _run_harness(program, b"".join(
      np.uint32(first_counter + i).astype("<u4").tobytes() + latent.tobytes()
      for i, latent in enumerate(np.asarray(latents, np.int8))))


def c_conditional_messages(program, hyper, values, indexes):
  """A conditional bundle's: int8 hyper-latents (N, ...) and the slice
  coder's int32 values and indexes (N, values) -> the messages `program`
  (`build_harness`) writes."""
  return _run_harness(program, b"".join(
      np.asarray(z, np.int8).tobytes() + np.asarray(v, np.int32).tobytes() +
      np.asarray(i, np.int32).tobytes()
      for z, v, i in zip(hyper, values, indexes)))


def c_integer_messages(program, hyper, latent):
  """A bundle's with an integer slice predictor: its int8 encoder's
  hyper-latents and latents (N, ...) -> the messages `program`
  (`build_harness`) writes."""
  return _run_harness(program, b"".join(
      np.asarray(z, np.int8).tobytes() + np.asarray(y, np.int8).tobytes()
      for z, y in zip(hyper, latent)))


def _run_harness(program, stdin):
  out = subprocess.run([program], input=stdin, capture_output=True,
                       check=True).stdout
  messages = []
  while out:
    length = int.from_bytes(out[:4], "little")
    messages.append(out[4:4 + length])
    out = out[4 + length:]
  return messages


def int8_model(bundle_dir):
  return os.path.join(bundle_dir, *bundle.ENCODER_INT8.split("/"))


def litert_outputs(bundle_dir, images):
  """(pixels the int8 encoder takes, its raw outputs under LiteRT, batched
  as the edge runs it)."""
  interpreter, _ = load_interpreter(int8_model(bundle_dir))
  (detail,) = interpreter.get_input_details()
  (output,) = interpreter.get_output_details()
  pixels = edge_encoder.pixel_table(detail)[images]
  interpreter.resize_tensor_input(detail["index"], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(detail["index"], pixels)
  interpreter.invoke()
  return pixels, interpreter.get_tensor(output["index"])


def _tflm(path, arena, inputs):
  """{output name: (N, ...)} of the model at `path` under TFLM, one image
  at a time, for `inputs` {input name: (N, ...)}."""
  with open(path, "rb") as f:
    model = f.read()
  positions = mcu.tensor_positions(model)
  interpreter = tflm.Interpreter.from_bytes(model, arena_size=arena)
  outputs = {name: [] for name in positions["outputs"]}
  for i in range(len(next(iter(inputs.values())))):
    for name, batch in inputs.items():
      interpreter.set_input(batch[i][np.newaxis], positions["inputs"][name])
    interpreter.invoke()
    for name, results in outputs.items():
      results.append(interpreter.get_output(positions["outputs"][name])[0])
  return {name: np.stack(results) for name, results in outputs.items()}


def litert_conditional(bundle_dir, images):
  """A conditional bundle's: (pixels the int8 encoder takes, its raw
  {stream name: int8 output} under LiteRT, as the edge runs it)."""
  # pylint: disable=protected-access
  encoder = EdgeEncoder(bundle_dir, int8=True)
  pixels = encoder._pixels[images]
  return pixels, encoder._encoder.run({bundle.ENCODER_INPUT: pixels})


def edge_conditional_messages(bundle_dir, hyper, latent):
  """What the Linux edge sends for a conditional bundle's int8 encoder
  outputs (its LiteRT slice coder, its range coder)."""
  encoder = EdgeEncoder(bundle_dir, int8=True)
  names = [stream["name"] for stream in encoder.manifest["streams"]]
  return encoder.codec.pack_messages(encoder.code(
      encoder.quantize(dict(zip(names, (hyper, latent))))))


def tflm_outputs(bundle_dir, pixels):
  """The int8 encoder's outputs under TFLM, one image at a time, with the
  arena the export measured: the latent, or a conditional bundle's
  {stream name: int8 output}."""
  outputs = _tflm(int8_model(bundle_dir), read_manifest(bundle_dir)["mcu"][
      "arena_bytes"], {bundle.ENCODER_INPUT: pixels})
  return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def tflm_slice_coder(bundle_dir, hyper, latent):
  """A conditional bundle's int8 outputs (N, ...) -> the values and indexes
  of its MCU slice coder under TFLM, its inputs made as main.cc makes them
  (tfvaeclf_hyper_codec.value, tfvaeclf_latent_input)."""
  manifest = read_manifest(bundle_dir)
  hyper_stream, latent_stream = manifest["streams"]
  quantization = manifest["edge"]["encoders"][bundle.ENCODER_INT8]["outputs"]
  z_hat = mcu.symbol_tables(**quantization[hyper_stream["name"]][
      "quantization"])[0].astype(np.float32)
  y = quantization[latent_stream["name"]]["quantization"]
  y_hat = (np.arange(-128, 128).astype(np.float32) -
           np.float32(y["zero_point"])) * np.float32(y["scale"])
  outputs = _tflm(
      os.path.join(bundle_dir, mcu.MCU_DIR, mcu.SLICE_CODER),
      manifest["mcu"]["slice_arena_bytes"],
      {bundle.HYPER_INPUT: z_hat[hyper.astype(np.int64) + 128],
       bundle.LATENT_INPUT: y_hat[latent.astype(np.int64) + 128]})
  return outputs[bundle.VALUES], outputs[bundle.INDEXES]


def read_manifest(bundle_dir):
  """The manifest, unchecked (the tests' and tools' bundles are fresh)."""
  with open(os.path.join(bundle_dir, bundle.MANIFEST)) as f:
    return json.load(f)


def server_classes(bundle_dir, messages):
  """The classes `BundleServer` gives the messages."""
  served = BundleServer(bundle_dir)
  latent_hat = np.concatenate([served.decode(m) for m in messages])
  return served.classify(latent_hat)["classes"]


def _c_rows(ctype, name, rows):
  rows = np.asarray(rows)
  text = ",\n".join("  {" + ", ".join(map(str, row.reshape(-1))) + "}"
                    for row in rows)
  return (f"static const {ctype} {name}[{len(rows)}][{rows[0].size}] = "
          f"{{\n{text}\n}};\n")


def fixed_latents_header(latents, counters):
  """fixed_latents.h for tools/mcu/fixed.c."""
  return (f"#include <stdint.h>\n#define FIXED_IMAGES {len(latents)}\n" +
          _c_rows("int8_t", "fixed_latents", latents) +
          f"static const uint32_t fixed_counters[{len(latents)}] = "
          f"{{{', '.join(f'{c}u' for c in counters)}}};\n")


def fixed_conditional_header(hyper, values, indexes):
  """fixed_latents.h for tools/mcu/fixed.c and a conditional bundle."""
  return (f"#include <stdint.h>\n#define FIXED_IMAGES {len(hyper)}\n" +
          _c_rows("int8_t", "fixed_hyper", hyper) +
          _c_rows("int32_t", "fixed_values", values) +
          _c_rows("int32_t", "fixed_indexes", indexes))


def fixed_integer_header(hyper, latent):
  """fixed_latents.h for tools/mcu/fixed.c and a bundle with an integer
  slice predictor."""
  return (f"#include <stdint.h>\n#define FIXED_IMAGES {len(hyper)}\n" +
          _c_rows("int8_t", "fixed_hyper", hyper) +
          _c_rows("int8_t", "fixed_latent", latent))
