#!/usr/bin/env python3
"""Server memory over many classified payloads: RSS growth after warm-up.

    tools/bench_serve_memory.py --bundle=BUNDLE [--payloads=1000000]

Classifies `--payloads` one-image messages of real test digits (from the
edge runtime, as tools/bench_serve.py makes them) in process through
`Core.classify_batch`, in batches as the batcher makes them from light load
to full (sizes log-uniform from 1 to `--max_batch`: small batches, the most
model calls per payload, are the most common), and checks every answer.
The first `--warmup` payloads fill TensorFlow's and the allocator's caches;
the process's resident memory (RSS, from /proc) after them and at the end
gives the growth in MB and in bytes per payload. Payloads per second of CPU
time (all threads) beside those per second of wall time: on a shared
machine the first is the one to compare. Target: <= 5 MB over a million
payloads.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tqdm  # noqa: E402

# From this script's dir.
from bench_serve import add_payload_arguments, payloads  # noqa: E402

TARGET_MB = 5


def rss_mb():
  """The process's resident memory, in MB."""
  with open("/proc/self/statm", encoding="ascii") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def classify(core, good, expected, count, max_batch, rng, progress=None):
  """Classifies `count` payloads in batches of log-uniform sizes; -> wrong
  answers."""
  wrong = 0
  while count > 0:
    size = min(int(np.exp(rng.uniform(0, np.log(max_batch + 1)))), count)
    picked = rng.integers(len(good), size=size)
    results = core.classify_batch([good[i] for i in picked])
    wrong += sum(not isinstance(result, dict) or
                 result["classes"] != expected[i]
                 for i, result in zip(picked, results))
    count -= size
    if progress is not None:
      progress.update(size)
  return wrong


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_payload_arguments(parser)
  parser.add_argument("--payloads", type=int, default=1_000_000)
  parser.add_argument("--warmup", type=int, default=20_000)
  parser.add_argument("--max_batch", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  if args.payloads < 1 or args.warmup < 0 or args.max_batch < 1:
    sys.exit("--payloads and --max_batch must be >= 1, --warmup >= 0")

  core, good, expected, _, _ = payloads(args.bundle, args.dataset, 256,
                                       args.data_dir)
  rng = np.random.default_rng(args.seed)
  wrong = classify(core, good, expected, args.warmup, args.max_batch, rng)
  start_mb = rss_mb()
  start, start_cpu = time.perf_counter(), time.process_time()
  with tqdm.tqdm(total=args.payloads, unit="payload") as progress:
    wrong += classify(core, good, expected, args.payloads, args.max_batch,
                      rng, progress)
  seconds = time.perf_counter() - start
  cpu_seconds = time.process_time() - start_cpu
  growth_mb = rss_mb() - start_mb
  print(f"| payloads | payloads/s | payloads/CPU-s | RSS after warm-up MB | "
        f"growth MB | B/payload (MB a million) | wrong |\n"
        f"|---|---|---|---|---|---|---|\n"
        f"| {args.payloads:,} | {args.payloads / seconds:,.0f} | "
        f"{args.payloads / cpu_seconds:,.0f} | {start_mb:.1f} | "
        f"{growth_mb:+.1f} | "
        f"{growth_mb * 1e6 / args.payloads:+.1f} | {wrong} |")
  print(f"\ntarget: <= {TARGET_MB} MB growth over 1,000,000 payloads")


if __name__ == "__main__":
  main()
