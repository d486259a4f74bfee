#!/usr/bin/env python3
"""Checks a trained model against the foundation's targets; prints a table.

    python tools/check_targets.py --model_dir=runs/mnist_joint
    python tools/check_targets.py --model_dir=runs/mnist_frontier \
        --min_accuracy=0.99 --max_bytes_per_image=4 --max_message_bytes=10

Evaluates the model on its full test split from real bitstreams (or reuses
`eval.json` when it is newer than the model), then checks:
  * test accuracy >= 98.5% at <= 0.1 bpp, counted from the actual bytes;
  * with --max_bytes_per_image / --max_message_bytes: the range-coded
    payload, and the one-image message, in bytes per image;
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
flags.DEFINE_float("max_bytes_per_image", None,
                   "Payload target, range-coded bytes per image.")
flags.DEFINE_float("max_message_bytes", None,
                   "Target for a one-image message, bytes per image.")

# Real bytes may exceed the estimate by this share plus this many bytes.
OVERHEAD_SHARE, OVERHEAD_BYTES = 0.02, 1


def _eval_results(model_dir, needed=()):
  """eval.json, evaluated again if older than the model or without the
  `needed` fields (written before they were measured)."""
  run = ModelDir(model_dir)
  path = run.eval_path()
  if (not os.path.exists(path)
      or os.path.getmtime(path) < os.path.getmtime(run.summary_path)
      or any(field not in run.eval() for field in needed)):
    subprocess.run([sys.executable, "-m", "tfvaeclf.evaluate",
                    f"--model_dir={model_dir}"], check=True)
  return run.eval()


def main(argv):
  del argv
  byte_targets = [
      (field, name, limit) for field, name, limit in (
          ("bytes_per_image", "payload bytes per image",
           FLAGS.max_bytes_per_image),
          ("message_bytes_per_image", "one-image message bytes",
           FLAGS.max_message_bytes))
      if limit is not None]
  results = _eval_results(FLAGS.model_dir,
                          [field for field, *_ in byte_targets])
  estimate = results["estimated_bytes_per_image"]
  overhead_limit = OVERHEAD_SHARE * estimate + OVERHEAD_BYTES
  checks = [
      ("test accuracy", f"{100 * results['accuracy']:.2f}%",
       f">= {100 * FLAGS.min_accuracy:.1f}%",
       results["accuracy"] >= FLAGS.min_accuracy),
      ("bits per pixel (actual bytes)", f"{results['bpp']:.4f}",
       f"<= {FLAGS.max_bpp}", results["bpp"] <= FLAGS.max_bpp),
      *((name, f"{results[field]:.2f}", f"<= {limit:g}",
         results[field] <= limit) for field, name, limit in byte_targets),
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
