#!/usr/bin/env bash
# Set-up plus the main job: train the default joint model on real MNIST
# (offline), evaluate it from real bitstreams and print the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
model_dir="${MODEL_DIR:-runs/mnist_joint}"
.venv/bin/python -m tfvaeclf.train --flagfile=configs/mnist_joint.flags --model_dir="$model_dir"
.venv/bin/python -m tfvaeclf.evaluate --model_dir="$model_dir"
