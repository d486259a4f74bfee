#!/usr/bin/env python3
"""Bytes per one-image message, against its payload and a one-image file.

    python tools/bench_messages.py [--images=1000] MODEL_DIR...

Codes the first test images of each model's dataset one message per image,
as a board sends them (a dithered model's counters running 0, 1, ...), and
prints a Markdown table of the mean bytes per image: the range-coded
strings (payload), the message, the one-image file (`codec_spec.file_size`)
and a file of all the images. Goal: <= 15 B per message for the
default MNIST model.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfvaeclf import codec, data, model_dir as model_dir_lib  # noqa: E402

TARGET_BYTES = 15
BATCH = 256


def _row(model_dir, count):
  """(model, coder streams, payload, message, one-image file, file per
  image, message overhead max), bytes."""
  loaded = model_dir_lib.load(model_dir)
  splits = data.load(**loaded.config["dataset"])
  payload, messages, files, whole, overhead = [], [], [], 0, 0
  counter = 0
  for images, _ in splits.test.take(count).batch(BATCH):
    images = images.numpy()
    batch = codec.compress_messages(
        loaded, images, counter if loaded.codec.dithered else None)
    counter += len(batch)
    whole += len(codec.compress_images(loaded, images))
    for message in batch:
      lengths = [len(s[0]) for s in loaded.codec.read(message).strings]
      payload.append(sum(lengths))
      messages.append(len(message))
      files.append(loaded.codec.file_size(lengths))
      overhead = max(overhead, len(message) - sum(lengths))
  return (loaded.config["model"], "+".join(loaded.codec.stream_names),
          np.mean(payload), np.mean(messages), np.mean(files),
          whole / len(messages), overhead, len(messages))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR")
  parser.add_argument("--images", type=int, default=1000,
                      help="test images per model")
  args = parser.parse_args()
  print("| model dir | model | streams | images | payload B | message B | "
        "max overhead B | one-image file B | file B/image |")
  print("|---|---|---|---|---|---|---|---|---|")
  for model_dir in args.model_dirs:
    (model, streams, payload, message, file_size, per_image, overhead,
     count) = _row(model_dir, args.images)
    print(f"| {model_dir} | {model} | {streams} | {count} | {payload:.2f} | "
          f"{message:.2f} | {overhead} | {file_size:.2f} | {per_image:.2f} |")
  print(f"\ngoal: <= {TARGET_BYTES} B per message for the default MNIST "
        "model (configs/mnist_joint.flags)")


if __name__ == "__main__":
  main()
