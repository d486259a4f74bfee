#!/usr/bin/env python3
"""The microcontroller bundle on a whole test set, and its size on a board.

Exports the model dir with `--mcu` (into a temporary dir), runs its int8
encoder under TFLM (the `tflite-micro` package, the exported arena) and
under LiteRT on the dataset's test images, codes both outputs into
messages with the bundle's C coder (host gcc), classifies them with the
bundle's server, and compares with the Keras model. A conditional model's
float32 slice coder runs under TFLM too, on TFLM's int8 outputs (as on a
board), and the C coder's bytes are checked against the Linux edge's for
the same int8 outputs. With
arm-none-eabi-gcc and qemu-system-arm (tools/setup.sh), also builds the
coder and tables for Cortex-M4 (thumb, -Os), checks QEMU's bytes for the
first images against the host's and prints arm-none-eabi-size figures.

  PYTHONPATH=. tools/bench_mcu.py --model_dir=DIR [--num_images=10000]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from tfvaeclf import export  # noqa: E402
from tfvaeclf.export import mcu  # noqa: E402
from tfvaeclf import data, model_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QEMU_IMAGES = 8
# tests/support's host harness comes from the checkout (PYTHONPATH=.); it is
# imported where it is used, so that --help runs without it.


def _test_images(config, count):
  test = data.load(**dict(config["dataset"], download=False)).test
  images, labels = zip(*test.take(count).as_numpy_iterator())
  return np.stack(images), np.array(labels)


def _keras_classes(model, images):
  return np.concatenate([
      tf.argmax(model(data.to_float(images[i:i + 500]), training=False)[
          "logits"], -1).numpy() for i in range(0, len(images), 500)])


def _litert(bundle_dir, images):
  from tests.support import mcu_host
  outputs = [mcu_host.litert_outputs(bundle_dir, images[i:i + 1000])
             for i in range(0, len(images), 1000)]
  return (np.concatenate([pixels for pixels, _ in outputs]),
          np.concatenate([latents for _, latents in outputs]))


def _factorized(bundle_dir, program, images):
  """(TFLM's messages, LiteRT's messages, TFLM's and LiteRT's int8
  outputs, fixed_latents.h of the first for QEMU)."""
  from tests.support import mcu_host
  pixels, litert = _litert(bundle_dir, images)
  tflm = mcu_host.tflm_outputs(bundle_dir, pixels)
  return (mcu_host.c_messages(program, tflm),
          mcu_host.c_messages(program, litert), tflm, litert,
          mcu_host.fixed_latents_header(tflm[:QEMU_IMAGES],
                                        range(QEMU_IMAGES)))


def _two_streams(bundle_dir, images):
  """A conditional bundle's stream names, and its int8 encoder's outputs
  under TFLM and LiteRT ({name: outputs})."""
  from tests.support import mcu_host
  hyper, latent = (stream["name"] for stream in
                   mcu_host.read_manifest(bundle_dir)["streams"])
  parts = [mcu_host.litert_conditional(bundle_dir, images[i:i + 1000])
           for i in range(0, len(images), 1000)]
  pixels = np.concatenate([p for p, _ in parts])
  litert = {name: np.concatenate([o[name] for _, o in parts])
            for name in (hyper, latent)}
  return hyper, latent, mcu_host.tflm_outputs(bundle_dir, pixels), litert


def _conditional(bundle_dir, program, images):
  """`_factorized`'s figures for a conditional bundle: TFLM runs both
  models; checks the C coder's bytes against the Linux edge's for TFLM's
  int8 outputs."""
  from tests.support import mcu_host
  hyper, latent, tflm, litert = _two_streams(bundle_dir, images)
  coded = [mcu_host.tflm_slice_coder(bundle_dir, outputs[hyper],
                                     outputs[latent])
           for outputs in (tflm, litert)]
  messages = [mcu_host.c_conditional_messages(program, outputs[hyper], *vi)
              for outputs, vi in zip((tflm, litert), coded)]
  fixed = mcu_host.fixed_conditional_header(
      tflm[hyper][:QEMU_IMAGES],
      *(part[:QEMU_IMAGES] for part in coded[0]))
  edge = mcu_host.edge_conditional_messages(bundle_dir, tflm[hyper],
                                            tflm[latent])
  print(f"C coder bytes equal to the Linux edge's (TFLM int8 outputs): "
        f"{sum(a == b for a, b in zip(messages[0], edge))} of {len(edge)}")
  return (*messages, *(np.concatenate(
      [o[name].reshape(len(images), -1) for name in (hyper, latent)], 1)
      for o in (tflm, litert)), fixed)


def _integer(bundle_dir, program, images):
  """`_conditional`'s figures for a bundle with an integer slice
  predictor: the bundle's C predicts and codes from the int8 outputs."""
  from tests.support import mcu_host
  hyper, latent, tflm, litert = _two_streams(bundle_dir, images)
  messages = [mcu_host.c_integer_messages(program, o[hyper], o[latent])
              for o in (tflm, litert)]
  edge = mcu_host.edge_conditional_messages(bundle_dir, tflm[hyper],
                                            tflm[latent])
  print(f"C predictor and coder bytes equal to the Linux edge's (TFLM int8 "
        f"outputs): {sum(a == b for a, b in zip(messages[0], edge))} of "
        f"{len(edge)}")
  fixed = mcu_host.fixed_integer_header(tflm[hyper][:QEMU_IMAGES],
                                        tflm[latent][:QEMU_IMAGES])
  return (*messages, *(np.concatenate(
      [o[name].reshape(len(images), -1) for name in (hyper, latent)], 1)
      for o in (tflm, litert)), fixed)


def _cortex_m4(bundle_dir, fixed, host_messages, directory):
  """QEMU's messages for the first latents equal the host's; the size
  figures of tools/mcu/qemu.sh."""
  header = os.path.join(directory, "fixed_latents.h")
  with open(header, "w") as f:
    f.write(fixed)
  run = subprocess.run(
      [os.path.join(REPO, "tools", "mcu", "qemu.sh"),
       os.path.join(bundle_dir, mcu.MCU_DIR), header,
       os.path.join(directory, "arm")], capture_output=True, text=True,
      check=True)
  same = [bytes.fromhex(line) for line in run.stdout.split()] == host_messages
  with open(os.path.join(directory, "arm", "size.txt")) as f:
    return same, f.read()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--num_images", type=int, default=10_000)
  parser.add_argument("--calibration_examples", type=int, default=500)
  args = parser.parse_args()
  from tests.support import mcu_host
  loaded = model_dir.load(args.model_dir)
  images, labels = _test_images(loaded.config, args.num_images)
  with tempfile.TemporaryDirectory() as directory:
    bundle_dir = os.path.join(directory, "bundle")
    export.export_bundle(loaded, bundle_dir, export.calibration_images(
        loaded.config, args.calibration_examples), with_mcu=True)
    program = os.path.join(directory, "harness")
    mcu_host.build_harness(bundle_dir, program)
    manifest = mcu_host.read_manifest(bundle_dir)
    run = {"indexed": _conditional, "indexed_integer": _integer}.get(
        manifest["streams"][-1].get("tables"), _factorized)
    messages, litert_messages, tflm, litert, fixed = run(
        bundle_dir, program, images)
    classes = mcu_host.server_classes(bundle_dir, messages)
    litert_classes = mcu_host.server_classes(bundle_dir, litert_messages)
    keras = _keras_classes(loaded.model, images)
    figures = manifest["mcu"]
    print(f"model {loaded.config['model']}, {len(images)} test images")
    print(f"int8 model {figures['model_bytes']} bytes, TFLM arena "
          f"{figures['arena_bytes']} bytes, ops {', '.join(figures['ops'])}")
    if "slice_coder_bytes" in figures:
      print(f"float32 slice coder {figures['slice_coder_bytes']} bytes, "
            f"TFLM arena {figures['slice_arena_bytes']} bytes")
    if "work_bytes" in figures:
      print(f"integer slice predictor: C, {figures['work_bytes']} bytes of "
            "RAM to work in")
    print(f"message: mean {np.mean([len(m) for m in messages]):.1f} bytes, "
          f"worst case {figures['max_message_bytes']}")
    differ = tflm != litert
    print(f"TFLM vs LiteRT int8 outputs: {differ.mean():.4%} of elements "
          f"differ (max {np.abs(tflm.astype(int) - litert).max()} LSB) on "
          f"{differ.reshape(len(images), -1).any(1).sum()} images; class "
          f"changes: {np.sum(classes != litert_classes)}")
    for name, predicted in (("Keras", keras), ("LiteRT + C coder",
                                               litert_classes),
                            ("TFLM + C coder", classes)):
      print(f"accuracy {name}: {np.mean(predicted == labels):.4f}")
    if shutil.which("arm-none-eabi-gcc") and shutil.which("qemu-system-arm"):
      same, sizes = _cortex_m4(bundle_dir, fixed, messages[:QEMU_IMAGES],
                               directory)
      print(f"Cortex-M4 (QEMU mps2-an386): bytes equal to the host's: {same}")
      print(sizes)
    else:
      print("no arm-none-eabi-gcc or qemu-system-arm: run tools/setup.sh")
  return 0


if __name__ == "__main__":
  sys.exit(main())
