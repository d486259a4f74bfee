#!/usr/bin/env python3
"""Checks a trained model against the foundation's targets; prints a table.

    python tools/check_targets.py --model_dir=runs/mnist_joint

Evaluates the model on its full test split from real bitstreams (or reuses
`eval.json` when it is newer than the model), then checks:
  * test accuracy >= 98.5% at <= 0.1 bpp, counted from the actual bytes;
  * actual bytes within 2% (+1 byte per image) of the estimated rate.
Prints a Markdown table for the README; exits 1 if a target is missed.
"""

import os
import subprocess
import sys

from absl import app, flags

from tfvaeclf.layout import ModelDir

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A trained model dir.")
flags.DEFINE_float("min_accuracy", 0.985, "Accuracy target.")
flags.DEFINE_float("max_bpp", 0.1, "Rate target, bits per pixel.")

# Real bytes may exceed the estimate by this share plus this many bytes.
OVERHEAD_SHARE, OVERHEAD_BYTES = 0.02, 1


def _eval_results(model_dir):
  run = ModelDir(model_dir)
  path = run.eval_path()
  if (not os.path.exists(path)
      or os.path.getmtime(path) < os.path.getmtime(run.summary_path)):
    subprocess.run([sys.executable, "-m", "tfvaeclf.evaluate",
                    f"--model_dir={model_dir}"], check=True)
  return run.eval()


def main(argv):
  del argv
  results = _eval_results(FLAGS.model_dir)
  estimate = results["estimated_bytes_per_image"]
  overhead_limit = OVERHEAD_SHARE * estimate + OVERHEAD_BYTES
  checks = [
      ("test accuracy", f"{100 * results['accuracy']:.2f}%",
       f">= {100 * FLAGS.min_accuracy:.1f}%",
       results["accuracy"] >= FLAGS.min_accuracy),
      ("bits per pixel (actual bytes)", f"{results['bpp']:.4f}",
       f"<= {FLAGS.max_bpp}", results["bpp"] <= FLAGS.max_bpp),
      ("bytes per image: actual / estimated",
       f"{results['bytes_per_image']:.2f} / {estimate:.2f}",
       f"actual <= estimate + {OVERHEAD_SHARE:.0%} + {OVERHEAD_BYTES} byte",
       results["bytes_per_image"] <= estimate + overhead_limit),
      ("encode / decode ms per image (batch 256)",
       f"{results['encode_ms_per_image']:.3f} / "
       f"{results['decode_ms_per_image']:.3f}", "", True),
  ]
  print("| measure | measured | target | met |")
  print("|---|---|---|---|")
  for name, measured, target, met in checks:
    print(f"| {name} | {measured} | {target} | "
          f"{'yes' if met else 'NO'} |" if target else
          f"| {name} | {measured} | | |")
  return 0 if all(met for *_, met in checks) else 1


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
