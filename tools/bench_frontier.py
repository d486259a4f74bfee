#!/usr/bin/env python3
"""Checks the rate frontier's models against their targets.

    python tools/bench_frontier.py --mnist_dir=runs/mnist_frontier \
        --fashion_mnist_dir=runs/fashion_mnist_frontier

Each dir is a model trained by `python -m tfvaeclf.train
--flagfile=configs/<dataset>_frontier.flags`. `tools/check_targets.py`
evaluates it on its full test split from real range-coded strings (or
reuses a current eval.json) and checks it against the dataset's targets:
MNIST >= 99.0% at <= 4 bytes of payload and <= 10 bytes as a one-image
message, Fashion-MNIST >= 90.5% at <= 6 bytes of payload. Prints a
Markdown table per dataset for docs/joint.md; exits 1 if a target is missed.
"""

import os
import subprocess
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("mnist_dir", None, "A model of mnist_frontier.flags.")
flags.DEFINE_string("fashion_mnist_dir", None,
                    "A model of fashion_mnist_frontier.flags.")

# The frontier's targets (docs/joint.md), as flags of tools/check_targets.py.
TARGETS = {
    "mnist": ["--min_accuracy=0.99", "--max_bytes_per_image=4",
              "--max_message_bytes=10"],
    "fashion_mnist": ["--min_accuracy=0.905", "--max_bytes_per_image=6"],
}


def main(argv):
  del argv
  dirs = {"mnist": FLAGS.mnist_dir, "fashion_mnist": FLAGS.fashion_mnist_dir}
  if not any(dirs.values()):
    raise app.UsageError("give --mnist_dir and/or --fashion_mnist_dir")
  check = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "check_targets.py")
  missed = []
  for dataset, model_dir in dirs.items():
    if not model_dir:
      continue
    print(f"\n### {dataset}: {model_dir}\n", flush=True)
    result = subprocess.run([sys.executable, check, f"--model_dir={model_dir}",
                             *TARGETS[dataset]])
    if result.returncode:
      missed.append(dataset)
  if missed:
    print(f"\ntargets missed: {', '.join(missed)}")
  return 1 if missed else 0


if __name__ == "__main__":
  app.run(main)
