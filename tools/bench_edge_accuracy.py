#!/usr/bin/env python3
"""A bundle's float32 and int8 edge encoders on a whole test set, against Keras.

    tools/bench_edge_accuracy.py --model_dir=DIR --bundle=BUNDLE \
        [--num_images=10000]

Codes the model's test images with the bundle's edge encoder (float32,
then int8), decodes the files with the bundle's server
(`tfvaeclf.serve.bundle_server.BundleServer`) and classifies them; prints,
per encoder, how many images' strings equal `codec compress`'s, the
accuracy, and its difference to the Keras model's (the target: int8 within 0.5 point
on the full test set), and the mean bytes per image. Prints a Markdown
table; exits 1 if the int8 target is missed.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from tfvaeclf import data, model_dir  # noqa: E402
from tfvaeclf.edge import EdgeEncoder  # noqa: E402
from tfvaeclf.serve.bundle_server import BundleServer  # noqa: E402

TARGET_POINTS = 0.5
BATCH = 1000


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--bundle", required=True)
  parser.add_argument("--num_images", type=int, default=10000)
  args = parser.parse_args()
  loaded = model_dir.load(args.model_dir)
  test = data.load(**dict(loaded.config["dataset"], download=False)).test
  images, labels = (np.concatenate(parts) for parts in zip(
      *test.take(args.num_images).batch(BATCH).as_numpy_iterator()))
  served = BundleServer(args.bundle, loaded.fingerprint)
  keras, model_strings = [], []
  for start in range(0, len(images), BATCH):
    batch = images[start:start + BATCH]
    logits = loaded.model(data.to_float(batch), training=False)["logits"]
    keras.append(np.argmax(logits, -1))
    strings, _ = loaded.model.compress(data.to_float(batch))
    model_strings.append(list(zip(*(s.numpy().tolist() for s in strings))))
  keras = np.concatenate(keras)
  model_strings = sum(model_strings, [])
  keras_accuracy = 100 * np.mean(keras == labels)
  print(f"{loaded.config['model']} "
        f"({loaded.config['model_config'].get('entropy_model')} coder), "
        f"{len(images)} test images: Keras accuracy {keras_accuracy:.2f}%\n")
  print("| edge encoder | strings equal to codec compress | accuracy % | "
        "vs Keras, points | classes equal to Keras % | bytes/image |")
  print("|---|---|---|---|---|---|")
  missed = False
  for int8 in (False, True):
    edge = EdgeEncoder(args.bundle, int8=int8)
    classes, same, sizes = [], 0, []
    for start in range(0, len(images), BATCH):
      coded = edge.encode(images[start:start + BATCH])
      strings = list(zip(*coded))
      same += sum(a == b for a, b in zip(
          model_strings[start:start + BATCH], strings))
      sizes += [sum(map(len, s)) for s in strings]
      classes.append(served.classify(served.decode(
          edge.codec.pack(coded)))["classes"])
    classes = np.concatenate(classes)
    accuracy = 100 * np.mean(classes == labels)
    if int8:
      missed = abs(accuracy - keras_accuracy) > TARGET_POINTS
    print(f"| {'int8' if int8 else 'float32'} | {same} of {len(images)} | "
          f"{accuracy:.2f} | {accuracy - keras_accuracy:+.2f} | "
          f"{100 * np.mean(classes == keras):.2f} | {np.mean(sizes):.2f} |")
  print(f"\ntarget: int8 within {TARGET_POINTS} point of Keras: "
        f"{'MISSED' if missed else 'met'}")
  sys.exit(1 if missed else 0)


if __name__ == "__main__":
  main()
