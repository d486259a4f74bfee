"""Measures a trained model on real bitstreams.

    python -m tfvaeclf.evaluate --model_dir=runs/mnist_joint [--split=test]

Every image is range-coded to bytes, decoded back (by the project's
bounded decoder, as the codec decodes files) and classified from the
decoded latent, exactly as a server would; the rate is counted from those
bytes (the range-coded strings; `file_*` adds what a file holding that one
image also carries: header, checksum and length prefixes; `message_*` what
a one-image message carries, as a board sends it). The model's own
rate estimate (the information content under its prior) is reported beside
it, and so is how often the classification from the bitstream agrees with
the in-graph test path (it must always).

An uncompressed classifier (no coder) is measured on the images themselves:
accuracy, cross-entropy and classification time, with the rate of sending
the raw 8-bit pixels (8 bits per pixel and channel, `"uncompressed": true`).
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import time

from absl import flags
import numpy as np
import tensorflow as tf
import tqdm

from tfvaeclf import data, losses
from tfvaeclf import model_dir as model_dir_lib

__all__ = ["evaluate", "format_table"]

FLAGS = flags.FLAGS
flags.DEFINE_enum("split", "test", ["train", "validation", "test"],
                  "Which split to evaluate on.")
flags.DEFINE_integer("max_examples", None,
                     "Evaluate only the first N examples of the split.")


def _evaluate_uncompressed(model, batches, progress):
  """Accuracy of a coder-less model on the images, at the raw-pixel rate."""
  classify = tf.function(model.classify, reduce_retracing=True)
  first_images, _ = next(iter(batches))
  classify(first_images)  # trace before timing
  totals = {"correct": 0, "ce": 0., "classify_s": 0., "n": 0}
  for images, labels in tqdm.tqdm(batches, desc="evaluate", unit="batch",
                                  disable=not progress):
    start = time.perf_counter()
    logits = classify(images).numpy()
    totals["classify_s"] += time.perf_counter() - start
    labels = labels.numpy()
    totals["n"] += len(labels)
    totals["correct"] += int(np.sum(np.argmax(logits, -1) == labels))
    totals["ce"] += float(tf.reduce_sum(
        losses.cross_entropy(labels, logits)))
  n = totals["n"]
  raw_bytes = int(np.prod(model.config.image_shape))
  return {
      "num_images": n,
      "uncompressed": True,
      "accuracy": totals["correct"] / n,
      "cross_entropy": totals["ce"] / n,
      "bytes_per_image": raw_bytes,
      "bpp": 8. * model.config.image_shape[-1],
      "classify_ms_per_image": 1e3 * totals["classify_s"] / n,
  }


def evaluate(loaded, dataset, batch_size=256, progress=True):
  """Runs the codec over `dataset` (unbatched uint8 images, labels)."""
  model = loaded.model
  if model.coder is None:
    return _evaluate_uncompressed(
        model, data.pipeline(dataset, batch_size), progress)
  compress = tf.function(model.compress, reduce_retracing=True)
  classify = tf.function(model.classify, reduce_retracing=True)
  in_graph = tf.function(lambda x: model(x, training=False),
                         reduce_retracing=True)
  batches = data.pipeline(dataset, batch_size)
  first_images, _ = next(iter(batches))
  first_strings, first_shape = compress(first_images[:1])
  classify(model.coder.decode([s.numpy() for s in first_strings],
                              first_shape))  # trace before timing

  totals = {"correct": 0, "agree": 0, "ce": 0., "bytes": 0, "est_bits": 0.,
            "file_bytes": 0, "message_bytes": 0,
            "encode_s": 0., "decode_s": 0., "psnr": 0., "mse": 0., "n": 0}
  for images, labels in tqdm.tqdm(batches, desc="evaluate", unit="batch",
                                  disable=not progress):
    start = time.perf_counter()
    strings, latent_shape = compress(images)
    strings = [s.numpy() for s in strings]  # the bytes, as a sender has them
    encoded = time.perf_counter()
    latent_hat = model.coder.decode(strings, latent_shape)
    logits = classify(latent_hat)
    predictions = tf.argmax(logits, -1).numpy()
    decoded = time.perf_counter()

    reference = in_graph(images)
    labels = labels.numpy()
    totals["n"] += len(labels)
    totals["correct"] += int(np.sum(predictions == labels))
    totals["agree"] += int(np.sum(
        predictions == tf.argmax(reference["logits"], -1).numpy()))
    totals["ce"] += float(tf.reduce_sum(
        losses.cross_entropy(labels, logits)))
    totals["bytes"] += sum(len(s) for stream in strings for s in stream)
    lengths = [[len(s) for s in image] for image in zip(*strings)]
    totals["file_bytes"] += sum(map(loaded.codec.file_size, lengths))
    totals["message_bytes"] += sum(map(loaded.codec.message_size, lengths))
    totals["est_bits"] += float(tf.reduce_sum(reference["bits"]))
    totals["encode_s"] += encoded - start
    totals["decode_s"] += decoded - encoded
    if model.has_decoder:
      mse = losses.mse(images, model.reconstruct(latent_hat))
      totals["mse"] += float(tf.reduce_sum(mse))
      totals["psnr"] += float(tf.reduce_sum(losses.psnr(mse)))

  n = totals["n"]
  pixels = model.num_pixels
  results = {
      "num_images": n,
      "accuracy": totals["correct"] / n,
      "cross_entropy": totals["ce"] / n,
      "bytes_per_image": totals["bytes"] / n,
      "bpp": 8. * totals["bytes"] / n / pixels,
      "file_bytes_per_image": totals["file_bytes"] / n,
      "file_bpp": 8. * totals["file_bytes"] / n / pixels,
      "message_bytes_per_image": totals["message_bytes"] / n,
      "estimated_bytes_per_image": totals["est_bits"] / 8. / n,
      "estimated_bpp": totals["est_bits"] / n / pixels,
      "agreement_with_in_graph": totals["agree"] / n,
      "encode_ms_per_image": 1e3 * totals["encode_s"] / n,
      "decode_ms_per_image": 1e3 * totals["decode_s"] / n,
  }
  if model.has_decoder:
    results["psnr"] = totals["psnr"] / n
    results["mse"] = totals["mse"] / n
  fixed_bits = getattr(model.coder, "fixed_bits", None)
  if fixed_bits is not None:  # a fixed-rate quantizer's R = dim * log2(L)
    results["fixed_bits_per_image"] = fixed_bits
    results["fixed_bpp"] = fixed_bits / pixels
  return results


def format_table(results):
  width = max(len(k) for k in results)
  rows = []
  for key, value in results.items():
    shown = f"{value:.4f}" if isinstance(value, float) else str(value)
    rows.append(f"{key:<{width}}  {shown}")
  return "\n".join(rows)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.model_dir:
    raise cli.UserError("--model_dir is required")
  loaded = model_dir_lib.load(FLAGS.model_dir, allow_uncompressed=True)
  dataset_args = dict(loaded.config["dataset"])
  if FLAGS.data_dir:
    dataset_args["data_dir"] = FLAGS.data_dir
  splits = data.load(**dataset_args)
  dataset = getattr(splits, FLAGS.split)
  if FLAGS.max_examples:
    dataset = dataset.take(FLAGS.max_examples)
  results = {"model": loaded.config["model"], "split": FLAGS.split,
             "data_source": splits.info.source,
             **evaluate(loaded, dataset, FLAGS.batch_size)}
  model_dir_lib.ModelDir(FLAGS.model_dir).write_eval(FLAGS.split, results)
  print(format_table(results))


if __name__ == "__main__":
  cli.run(main)
