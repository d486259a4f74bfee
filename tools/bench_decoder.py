#!/usr/bin/env python3
"""Decoder speed and worst case: the project's decoder against TFC's ops.

On a trained model dir and real test images of its dataset: the coder's
`decode` (the project's bounded decoder, what the codec, evaluate and the
server run) against TFC's ops (the model's `decompress` in a tf.function)
on the same strings, in images/s of CPU time at batch 1 and 256, values
checked equal (tools/bench_native_coder.py measures the range coders alone,
on synthetic latents). Then the longest decode over the fuzz corpus of
tests/test_decode_fuzz.py (raw mutations and CRC-valid crafted payloads of
the model's files). With --tfc_timeout, TFC's decoder also gets the issue's
attack (a 16-image file whose strings open an escape code and end), in a
subprocess killed after that many seconds.

  PYTHONPATH=. tools/bench_decoder.py --model_dir=DIR [--tfc_timeout=60]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

from bench_native_coder import best_rate  # noqa: E402  (this script's dir)
from tfvaeclf import codec, coders, data, errors, model_dir  # noqa: E402

# TFC's decompress of one file, in a process of its own (it may not end).
TFC_DECODE = """
import sys, time
import tensorflow as tf
from tfvaeclf import model_dir
loaded = model_dir.load(sys.argv[1])
with open(sys.argv[2], "rb") as f:
  coded = loaded.codec.unpack(f.read())
start = time.perf_counter()
loaded.model.decompress([tf.constant(s) for s in coded.strings],
                        coded.latent_shape)
print(f"{time.perf_counter() - start:.3f}")
"""


def test_images(loaded, count):
  splits = data.load(**loaded.config["dataset"])
  images, _ = next(iter(splits.test.batch(count)))
  return images.numpy()


def tfc_on_attack(model_dir_path, file_bytes, timeout):
  """Seconds TFC's decompress takes on the file, or None past `timeout`."""
  with tempfile.NamedTemporaryFile(suffix=".tfvc") as f:
    f.write(file_bytes)
    f.flush()
    try:
      run = subprocess.run(
          [sys.executable, "-c", TFC_DECODE, model_dir_path, f.name],
          capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
      return None
  return float(run.stdout.split()[-1])


def main():
  parser = argparse.ArgumentParser(
      description=__doc__.splitlines()[0],
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model_dir", required=True)
  parser.add_argument("--tf_threads", type=int, default=1,
                      help="TensorFlow's intra/inter-op threads")
  parser.add_argument("--fuzz_cases", type=int, default=2000,
                      help="raw mutations, then as many crafted payloads")
  parser.add_argument("--tfc_timeout", type=float, default=0,
                      help="run TFC on the issue's attack for at most this "
                      "many seconds (0: not at all)")
  args = parser.parse_args()
  # tests/support comes from the checkout (PYTHONPATH=.); imported here,
  # so that --help runs without it.
  from tests.support.hostile import (crafted_payloads, escape_attack, fuzz,
                                     raw_mutations)
  tf.config.threading.set_intra_op_parallelism_threads(args.tf_threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.tf_threads)
  loaded = model_dir.load(args.model_dir)
  model, coder = loaded.model, loaded.model.coder
  images = test_images(loaded, 256)
  tfc_decompress = tf.function(model.decompress, reduce_retracing=True)
  print(f"model: {args.model_dir} ({loaded.config['model']}, "
        f"{type(coder).__name__}, latent {loaded.codec.latent_shape}); "
        f"TensorFlow on {args.tf_threads} thread(s)")
  print(f"{'batch':>5s} {'ours img/s':>11s} {'TFC img/s':>11s} "
        f"{'B/image':>8s}")
  for batch in (1, 256):
    strings, latent_shape = model.compress(data.to_float(images[:batch]))
    ours = [s.numpy() for s in strings]
    theirs = [tf.constant(s) for s in ours]
    np.testing.assert_array_equal(
        coder.decode(ours, latent_shape).numpy(),
        tfc_decompress(theirs, latent_shape).numpy())
    size = sum(len(s) for stream in ours for s in stream) / batch
    rates = [best_rate(decode, batch) for decode in (
        lambda: coder.decode(ours, latent_shape),
        lambda: tfc_decompress(theirs, latent_shape))]
    print(f"{batch:5d} {rates[0]:11,.0f} {rates[1]:11,.0f} {size:8.1f}")

  files = [codec.compress_images(loaded, images[:n]) for n in (1, 16)]
  rng = np.random.default_rng(14)
  for name, corpus in (
      ("raw mutations", raw_mutations(rng, files, args.fuzz_cases)),
      ("crafted payloads", crafted_payloads(rng, files, args.fuzz_cases))):
    outcomes, (worst, size) = fuzz(
        lambda file_bytes: codec.decode_latent(loaded, file_bytes), corpus)
    print(f"fuzz, {len(corpus)} {name}: worst decode {1e3 * worst:.2f} ms "
          f"(a {size}-byte file); outcomes {outcomes}")

  if args.tfc_timeout:
    if not isinstance(coder, coders.FactorizedCoder):
      raise SystemExit("--tfc_timeout: the attack needs a factorized coder")
    attack = escape_attack(loaded, images[:16])
    start = time.perf_counter()
    try:
      codec.decode_latent(loaded, attack)
      verdict = "decoded"
    except errors.BitstreamError as e:
      verdict = str(e)
    print(f"the issue's attack ({len(attack)} B, 16 images): ours "
          f"{1e3 * (time.perf_counter() - start):.1f} ms ({verdict})")
    seconds = tfc_on_attack(args.model_dir, attack, args.tfc_timeout)
    print("TFC: " + (f"did not finish in {args.tfc_timeout:g} s (killed)"
                     if seconds is None else f"{seconds:.3f} s"))


if __name__ == "__main__":
  main()
