#!/usr/bin/env python3
"""Micro-benchmark of the TF-free range coder (tfvaeclf.coding.range_coder).

Encodes a latent of `--symbols` values coded with `--channels` tables (as a
ContinuousBatchedEntropyModel with a per-channel prior would) and reports the
time per image for several batch sizes, for encoding and decoding. numpy only.

  python tools/bench_range_coder.py [--symbols 256] [--channels 16]
"""

import argparse
import time
import timeit

import numpy as np

from tfvaeclf.coding import range_coder as rc


def laplace_tables(channels, precision, rng):
  """Quantized discretized-Laplace CDFs with an escape bin, TFC layout."""
  cdfs, offsets = [], []
  for _ in range(channels):
    scale = rng.uniform(0.3, 4.0)
    half = int(np.ceil(scale * 8))
    x = np.arange(-half, half + 1)
    cdf_c = lambda v: np.where(v < 0, 0.5 * np.exp(v / scale),
                               1 - 0.5 * np.exp(-v / scale))
    pmf = cdf_c(x + .5) - cdf_c(x - .5)
    pmf = np.append(pmf, max(1 - pmf.sum(), 0))   # escape bin
    q = np.maximum(np.rint(pmf * 2**precision).astype(np.int64), 1)
    q[np.argmax(q)] += 2**precision - q.sum()      # crude normalization
    cdfs.append(np.concatenate([[0], np.cumsum(q)]))
    offsets.append(-half)
  return rc.CdfTables.from_cdfs(cdfs, precision, offsets), cdfs


def sample(tables, batch, n, rng):
  """Values drawn from the tables' own distributions (+ rare escapes)."""
  chans = np.arange(n) % tables.num_tables
  out = np.empty((batch, n), np.int64)
  for j, c in enumerate(chans):
    cdf = tables.cdfs[c]
    u = rng.integers(0, cdf[-1], size=batch)
    out[:, j] = np.searchsorted(cdf, u, side="right") - 1 + tables.offsets[c]
  return out


def best_of(fn, number, repeat=5):
  """Best CPU time per call: robust on a machine shared with other jobs."""
  return min(timeit.repeat(fn, number=number, repeat=repeat,
                           timer=time.process_time)) / number


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--symbols", type=int, default=256)
  parser.add_argument("--channels", type=int, default=16)
  parser.add_argument("--batches", type=str, default="1,8,64,512")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  n = args.symbols
  print(f"{n} symbols per image, {args.channels} tables; CPU time per image "
        "(best of 5)")
  for precision in (12, 16):
    tables, _ = laplace_tables(args.channels, precision, rng)
    for batch in [int(b) for b in args.batches.split(",")]:
      values = sample(tables, batch, n, rng)
      strings = rc.encode_channel(values, tables)
      number = max(1, 2000 // batch)
      enc = best_of(lambda: rc.encode_channel(values, tables), number)
      dec = best_of(lambda: rc.decode_channel(strings, tables, (n,)),
                    max(1, number // 4))
      nbytes = np.mean([len(s) for s in strings])
      print(f"  precision {precision:2d} batch {batch:4d}: "
            f"encode {enc / batch * 1e3:7.3f} ms  "
            f"decode {dec / batch * 1e3:7.3f} ms  ({nbytes:.0f} B/image)")
    # Streams with escapes: one value in 64 far outside the table.
    values = sample(tables, 1, n, rng)
    values[0, ::64] += 1000
    enc = best_of(lambda: rc.encode_channel(values, tables), 1000)
    print(f"  precision {precision:2d} batch    1 with 1/64 escapes: "
          f"encode {enc * 1e3:7.3f} ms")
  # Lockstep vs per-stream crossover.
  tables, _ = laplace_tables(args.channels, 16, rng)
  print("per-stream vs lockstep encode (per image):")
  default = rc.LOCKSTEP_MIN_BATCH
  for batch in (8, 16, 32, 64, 128, 256):
    values = sample(tables, batch, n, rng)
    times = []
    for threshold in (1 << 30, 1):
      rc.LOCKSTEP_MIN_BATCH = threshold
      times.append(best_of(lambda: rc.encode_channel(values, tables),
                           max(1, 400 // batch)) / batch * 1e3)
    rc.LOCKSTEP_MIN_BATCH = default
    print(f"  batch {batch:3d}: per-stream {times[0]:.3f} ms  "
          f"lockstep {times[1]:.3f} ms")


if __name__ == "__main__":
  main()
