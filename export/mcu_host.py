"""A bundle's `mcu/` run on this host, for tests and tools/bench_mcu.py:
its C coder built by gcc (tools/mcu/harness.c), its int8 encoder under TFLM
(the `tflite-micro` package, with the arena the export measured) and under
LiteRT (as the Linux edge runs it)."""

import json
import os
import subprocess

import numpy as np
from tflite_micro import runtime as tflm

from tfvaeclf.edge import bundle
from tfvaeclf.edge import encoder as edge_encoder
from tfvaeclf.edge.interpreter import load_interpreter

from export import mcu, server

__all__ = ["CFLAGS", "build_harness", "c_messages", "fixed_latents_header",
           "int8_model", "litert_outputs", "read_manifest", "server_classes",
           "tflm_outputs"]

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_HARNESS = os.path.join(_REPO, "tools", "mcu", "harness.c")
# -Wconversion is left out: it warns on int8 -> int arithmetic C99 defines.
CFLAGS = ("-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror")


def build_harness(bundle_dir, program):
  """Builds `program`: tools/mcu/harness.c with the bundle's coder."""
  source = os.path.join(bundle_dir, mcu.MCU_DIR)
  sources = [os.path.join(source, name) for name in
             ("range_coder.c", "tfvaeclf_message.c", "tfvaeclf_model.c")]
  subprocess.run(["gcc", *CFLAGS, f"-I{source}", _HARNESS, *sources, "-o",
                  program], check=True)


def c_messages(program, latents, first_counter=0):
  """int8 latents (N, ...) -> the messages `program` (`build_harness`)
  writes, with counters from `first_counter`."""
  stdin = b"".join(
      np.uint32(first_counter + i).astype("<u4").tobytes() + latent.tobytes()
      for i, latent in enumerate(np.asarray(latents, np.int8)))
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
  pixels = edge_encoder._pixel_table(detail)[images]  # pylint: disable=W0212
  interpreter.resize_tensor_input(detail["index"], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(detail["index"], pixels)
  interpreter.invoke()
  return pixels, interpreter.get_tensor(output["index"])


def tflm_outputs(bundle_dir, pixels):
  """The int8 encoder's outputs under TFLM, one image at a time, with the
  arena the export measured."""
  with open(int8_model(bundle_dir), "rb") as f:
    model = f.read()
  arena = read_manifest(bundle_dir)["mcu"]["arena_bytes"]
  interpreter = tflm.Interpreter.from_bytes(model, arena_size=arena)
  outputs = []
  for image in pixels:
    interpreter.set_input(image[np.newaxis], 0)
    interpreter.invoke()
    outputs.append(interpreter.get_output(0)[0])
  return np.stack(outputs)


def read_manifest(bundle_dir):
  """The manifest, unchecked (the tests' and tools' bundles are fresh)."""
  with open(os.path.join(bundle_dir, bundle.MANIFEST)) as f:
    return json.load(f)


def server_classes(bundle_dir, messages):
  """The classes `export.server.BundleServer` gives the messages."""
  served = server.BundleServer(bundle_dir)
  latent_hat = np.concatenate([served.decode(m) for m in messages])
  return served.classify(latent_hat)["classes"]


def fixed_latents_header(latents, counters):
  """fixed_latents.h for tools/mcu/fixed.c."""
  rows = ",\n".join("  {" + ", ".join(map(str, latent.reshape(-1))) + "}"
                    for latent in np.asarray(latents, np.int8))
  return (f"#include <stdint.h>\n#define FIXED_IMAGES {len(latents)}\n"
          f"static const int8_t fixed_latents[{len(latents)}]"
          f"[{latents[0].size}] = {{\n{rows}\n}};\n"
          f"static const uint32_t fixed_counters[{len(latents)}] = "
          f"{{{', '.join(f'{c}u' for c in counters)}}};\n")
