#!/usr/bin/env bash
# Set-up plus the main job: train the default model (the joint kind with a
# global latent, configs/mnist_frontier.flags) on real MNIST
# (offline), evaluate it from real bitstreams and print the results table.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
model_dir="${MODEL_DIR:-runs/mnist_frontier}"
.venv/bin/python -m tfvaeclf.train --flagfile=configs/mnist_frontier.flags --model_dir="$model_dir"
.venv/bin/python -m tfvaeclf.evaluate --model_dir="$model_dir"
