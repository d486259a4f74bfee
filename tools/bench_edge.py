#!/usr/bin/env python3
"""Edge encode time per image, against Pillow JPEG; prints Markdown tables.

    python tools/bench_edge.py --bundle=BUNDLE [--bundle=BUNDLE...] \
        [--images=1000]

Codes test images of each bundle's dataset one at a time (batch 1) on one
core (the process is pinned to a CPU and the interpreter gets 1 thread):
the TFLite models with rounding ("encoder": the encoder, and a conditional
coder's sub-models that predict its tables), the range coder, and both
together, for the float32 and the int8 encoder, each with the C and the
numpy range coder; then Pillow's JPEG encoder on the same images, and the
bundle's file sizes. Times are CPU time (what one dedicated core would
spend), the best of `--repeats` passes over the images: robust on a machine
shared with other jobs. Targets: <= 0.5 ms per image in total;
int8 encoder <= 100 KB for the default MNIST model; with the C coder, at
most 3x JPEG's encode time (--jpeg_ratio); given a factorized and a context
bundle, the context one's total at most 2x the factorized one's,
the two timed pass by pass in turn (`2 * --repeats` passes each).
"""

import argparse
import io
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from tfvaeclf.coding import bundle  # noqa: E402
from tfvaeclf.edge import EdgeEncoder  # noqa: E402

TARGET_MS = 0.5
TARGET_INT8_KB = 100
TARGET_JPEG_RATIO = 3  # the edge's total against JPEG's encode
TARGET_CONTEXT_RATIO = 2  # context against factorized, total


def _test_images(dataset, count, data_dir=None):
  """uint8 test images of the bundle's dataset (TensorFlow loads them)."""
  from tfvaeclf import data  # pylint: disable=g-import-not-at-top
  images, _ = next(iter(data.load(dataset, data_dir=data_dir).test.batch(
      count)))
  return images.numpy()


def _ms_per_image(code_one, images, repeats):
  best = float("inf")
  for _ in range(repeats):
    start = time.process_time()
    for image in images:
      code_one(image)
    best = min(best, time.process_time() - start)
  return 1e3 * best / len(images)


def _coder_name(manifest):
  """Which coder the bundle's model has, from its streams."""
  latent = manifest["streams"][-1]
  if "conditional" in latent:
    return ("context" if len(latent["conditional"]["slices"]) > 1
            else "hyperprior")
  return "dithered" if "dither" in latent else "factorized"


def _edge_encoders(bundle_dir):
  """(label, EdgeEncoder) per encoder and range coder (the C coder, if it
  builds here, and the numpy one)."""
  for int8 in (False, True):
    for native_coder in (True, False):
      edge = EdgeEncoder(bundle_dir, int8=int8, num_threads=1,
                         native_coder=native_coder)
      if native_coder and edge.coder != "C":
        continue  # no C compiler here: the numpy row follows
      yield (f"edge, {'int8' if int8 else 'float32'} encoder, {edge.coder} "
             f"coder ({edge.runtime})"), edge


def _edge_rows(bundle_dir, images, repeats):
  """(label, encoder ms, coder ms, total ms, bytes per image, bytes per
  message) per encoder and range coder."""
  rows = []
  singles = [image[np.newaxis] for image in images]
  for label, edge in _edge_encoders(bundle_dir):
    latents = [edge.latents(image) for image in singles]
    strings = [edge.code(latent) for latent in latents]
    lengths = [[len(s[0]) for s in per] for per in strings]
    rows.append((
        label,
        _ms_per_image(edge.latents, singles, repeats),
        _ms_per_image(edge.code, latents, repeats),
        _ms_per_image(edge.encode, singles, repeats),
        np.mean([sum(n) for n in lengths]),
        np.mean([edge.codec.message_size(n) for n in lengths])))
  return rows


def _context_ratios(factorized_dir, context_dir, images, repeats):
  """{label: (best context pass / best factorized pass, median of the
  paired passes' ratios)}: the two bundles' totals timed pass by pass in
  turn, so that the load of a shared machine weighs on both alike."""
  singles = [image[np.newaxis] for image in images]
  ratios = {}
  for (label, factorized), (_, context) in zip(
      _edge_encoders(factorized_dir), _edge_encoders(context_dir)):
    passes = [(_ms_per_image(factorized.encode, singles, 1),
               _ms_per_image(context.encode, singles, 1))
              for _ in range(repeats)]
    best = np.min(passes, axis=0)
    ratios[label] = (best[1] / best[0],
                     np.median([c / f for f, c in passes]))
  return ratios


def _jpeg_rows(images, qualities, repeats):
  pictures = [Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1
                              else image) for image in images]
  rows = []
  for quality in qualities:
    def encode(picture):
      buffer = io.BytesIO()
      picture.save(buffer, format="JPEG", quality=quality)
      return buffer.getvalue()

    size = np.mean([len(encode(p)) for p in pictures])
    ms = _ms_per_image(encode, pictures, repeats)
    rows.append((f"Pillow JPEG, quality {quality}", None, None, ms, size,
                 None))
  return rows


def _fmt(value, digits=3):
  return "" if value is None else f"{value:.{digits}f}"


def _report(bundle_dir, images_count, qualities, repeats, jpeg_ratio,
            data_dir=None):
  """Prints one bundle's tables; returns its coder's name."""
  manifest = bundle.read_manifest(bundle_dir, bundle.EDGE_DIR)
  images = _test_images(manifest["model"]["dataset"], images_count, data_dir)
  rows = (_edge_rows(bundle_dir, images, repeats)
          + _jpeg_rows(images, qualities, repeats))
  coder = _coder_name(manifest)
  shape = "x".join(str(d) for d in manifest["image_shape"])
  print(f"{manifest['model']['name']} ({coder} coder) "
        f"{manifest['model']['fingerprint']}: {len(images)} {shape} test "
        f"images, batch 1, one core, CPU ms per image (best of {repeats})"
        "\n")
  print("| coder | encoder ms | range coder ms | total ms | bytes/image | "
        "bytes/message |")
  print("|---|---|---|---|---|---|")
  for label, encoder_ms, coder_ms, total_ms, size, message in rows:
    print(f"| {label} | {_fmt(encoder_ms)} | {_fmt(coder_ms)} | "
          f"{_fmt(total_ms)} | {size:.1f} | {_fmt(message, 1)} |")

  files = manifest["files"]
  server_kb = sum(e["size"] for name, e in files.items()
                  if name.startswith(bundle.SERVER_DIR + "/")) / 1e3
  print("\n| bundle file | KB |\n|---|---|")
  for name, entry in files.items():
    if name.startswith(bundle.EDGE_DIR + "/"):
      print(f"| {name} | {entry['size'] / 1e3:.1f} |")
  print(f"| {bundle.SERVER_DIR}/ (SavedModel) | {server_kb:.1f} |")

  edge_totals = [total for label, _, _, total, _, _ in rows
                 if label.startswith("edge") and " C coder" in label] or [
                     total for label, _, _, total, _, _ in rows
                     if label.startswith("edge")]
  slowest = max(edge_totals)
  jpeg = min(total for label, _, _, total, _, _ in rows
             if label.startswith("Pillow"))
  int8_kb = files[bundle.ENCODER_INT8]["size"] / 1e3
  print(f"\ntargets: edge total <= {TARGET_MS} ms/image: "
        f"{'met' if slowest <= TARGET_MS else 'MISSED'} ({slowest:.3f}); "
        f"<= {jpeg_ratio:g}x JPEG's fastest encode: "
        f"{'met' if slowest <= jpeg_ratio * jpeg else 'MISSED'} "
        f"({slowest / jpeg:.1f}x); "
        f"int8 encoder <= {TARGET_INT8_KB} KB: "
        f"{'met' if int8_kb <= TARGET_INT8_KB else 'MISSED'} "
        f"({int8_kb:.1f} KB)\n")
  return coder


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--bundle", required=True, action="append",
                      help="a bundle; repeat to compare coders")
  parser.add_argument("--images", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--jpeg_qualities", default="50,75,90")
  parser.add_argument("--jpeg_ratio", type=float, default=TARGET_JPEG_RATIO,
                      help="the target: the edge's total at most this many "
                      "times JPEG's fastest encode")
  parser.add_argument("--data_dir", default=None,
                      help="where the bundle's dataset is (as for training)")
  args = parser.parse_args()
  os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
  qualities = [int(q) for q in args.jpeg_qualities.split(",")]
  coders = {}
  for bundle_dir in args.bundle:
    coders[_report(bundle_dir, args.images, qualities, args.repeats,
                   args.jpeg_ratio, args.data_dir)] = bundle_dir
  if {"factorized", "context"} <= set(coders):
    # Like for like: the same encoder and range coder, timed in turn.
    manifest = bundle.read_manifest(coders["context"], bundle.EDGE_DIR)
    images = _test_images(manifest["model"]["dataset"], args.images,
                          args.data_dir)
    ratios = _context_ratios(coders["factorized"], coders["context"], images,
                             2 * args.repeats)
    print("| context total / factorized total | best passes | median of "
          "paired passes |\n|---|---|---|")
    for label, (best, median) in ratios.items():
      print(f"| {label} | {best:.2f}x | {median:.2f}x |")
    worst = max(ratios, key=lambda label: ratios[label][0])
    print(f"\ntarget: context total <= {TARGET_CONTEXT_RATIO}x factorized's "
          "(same encoder and coder, best passes): "
          f"{'met' if ratios[worst][0] <= TARGET_CONTEXT_RATIO else 'MISSED'}"
          f" (worst: {ratios[worst][0]:.2f}x, {worst})")


if __name__ == "__main__":
  main()
