#!/usr/bin/env python3
"""Checks the CIFAR-10 frontier against both trivial extremes: its targets.

    python tools/bench_cifar10.py \
        --runs=runs/cifar10/joint_5kb,runs/cifar10/joint_20kb,\
runs/cifar10/joint_80kb,runs/cifar10/board_plain_cnn,... \
        --baselines=runs/cifar10/baselines_jpeg_webp.csv,... \
        --budgets=8KB,24KB,96KB [--edge_bundle=BUNDLE --data_dir=DATA]

--runs are frontier dirs and model dirs (`points.load_runs`): the joint
points with their board.json, and the send-the-class classifiers measured
by `python -m tfvaeclf.experiments.board`. The targets
(`tfvaeclf.experiments.extremes`; a coded point counts its int8 accuracy
on the board, a codec its better reader's, fine-tuned or as trained):

1. At each budget, a coded point at <= 32 B of payload is >= 3 points more
   accurate than the best send-the-class classifier that fits the budget.
   Moonshot: the middle budget's point reaches the largest budget's
   send-the-class accuracy.
2. The most accurate coded point at <= 128 B (1 bpp on 32x32): every
   codec needs >= 10x its payload for the same accuracy.
3. The VAE-classifier paper's claim at 0.8 bpp (102.4 B a 32x32 image):
   joint >= JPEG + 10 points.
4. With --edge_bundle (the middle budget's bundle): tools/bench_edge.py in
   the same run, its total (encoder and C coder, batch 1, one core) <= 2x
   Pillow's JPEG encode of the same images.

Prints each target as met or MISSED; exits 1 if one is missed.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import os
import subprocess
import sys

from absl import flags

from tfvaeclf.errors import UserError
from tfvaeclf.experiments import extremes, points as points_lib
from tfvaeclf.experiments.budgets import (budget_label, format_bytes,
                                          parse_budgets)

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", [], "Frontier dirs and model dirs.")
flags.DEFINE_string("edge_bundle", None,
                    "The middle budget's exported bundle, for target 4.")
flags.DEFINE_integer("edge_images", 1000, "Test images target 4 times.")

CLASS_PAYLOAD, CLASS_GAIN = 32, 0.03
CODEC_PAYLOAD, CODEC_RATIO = 128, 10
CLAIM_PAYLOAD, CLAIM_GAP = 0.8 * 32 * 32 / 8, 0.10
EDGE_JPEG_RATIO = 2


def _pct(value):
  return "–" if value is None else f"{100 * value:.2f}%"


def _coded(point):
  if point is None:
    return "none"
  budget = budget_label(point.edge_int8_bytes, point.edge_macs,
                        point.board_model_bytes) or "not measured on a board"
  return (f"{point.name} ({point.setting}): "
          f"{_pct(extremes.coded_accuracy(point))} on the board, "
          f"{_pct(point.accuracy)} in Keras, "
          f"{point.payload_bytes_per_image:.1f} B payload, {budget}")


def _verdict(ok):
  return "met" if ok else "MISSED"


def _beats_the_class(points, budgets):
  print(f"## 1. a coded point at <= {CLASS_PAYLOAD} B against sending the "
        "class\n")
  results = extremes.beats_the_class(points, budgets, CLASS_PAYLOAD)
  ok = True
  for result in results:
    board = result.board
    sent = (f"{board.name}, {_pct(board.accuracy)} "
            f"({format_bytes(board.edge_int8_bytes)} int8)"
            if board else "none fits")
    print(f"- <= {format_bytes(result.budget)}: coded {_coded(result.coded)}"
          f"; send the class: {sent}")
    gain = result.gain
    met = gain is not None and gain >= CLASS_GAIN
    ok &= met
    print(f"  target >= +{100 * CLASS_GAIN:.0f} points: {_verdict(met)} "
          f"({'–' if gain is None else f'{100 * gain:+.2f} points'})")
  if len(results) >= 2 and results[-1].board and results[1].coded:
    middle = extremes.coded_accuracy(results[1].coded)
    top = results[-1].board.accuracy
    print(f"- moonshot, <= {format_bytes(results[1].budget)} coded at "
          f"least the <= {format_bytes(results[-1].budget)} send-the-class "
          f"accuracy: {_verdict(middle >= top)} ({_pct(middle)} against "
          f"{_pct(top)})")
  return ok


def _codec_bytes(points):
  print(f"\n## 2. the codecs' bytes at the best coded point at <= "
        f"{CODEC_PAYLOAD} B\n")
  result = extremes.codec_bytes_to_match(points, CODEC_PAYLOAD)
  print(f"- coded: {_coded(result.coded)}")
  ok = result.coded is not None and bool(result.matches)
  coded_bytes = result.coded and result.coded.payload_bytes_per_image
  for codec, match in result.matches.items():
    if match is None:
      best = result.best_rows[codec]
      print(f"- {codec}: no setting reaches it; its best, "
            f"{points_lib.setting_name(codec, best.setting)}, "
            f"is {_pct(extremes.codec_accuracy(best))} at "
            f"{best.payload_bytes_per_image:.1f} B payload (so > "
            f"{best.payload_bytes_per_image / coded_bytes:.1f}x)")
      continue
    ratio = result.ratio(codec)
    ok &= ratio >= CODEC_RATIO
    print(f"- {codec}: {points_lib.setting_name(codec, match.setting)}, "
          f"{_pct(extremes.codec_accuracy(match))} at "
          f"{match.payload_bytes_per_image:.1f} B payload "
          f"({match.bytes_per_image:.1f} B file): {ratio:.1f}x")
  print(f"  target every codec >= {CODEC_RATIO}x: {_verdict(ok)}")
  return ok


def _row(point):
  return (f"{points_lib.setting_name(point.name, point.setting)}, "
          f"{_pct(extremes.codec_accuracy(point))} at "
          f"{point.payload_bytes_per_image:.1f} B payload")


def _claim(points):
  print(f"\n## 3. the VAE-classifier paper's claim at 0.8 bpp "
        f"({CLAIM_PAYLOAD:.1f} B payload)\n")
  result = extremes.gap_at_payload(points, "jpeg", CLAIM_PAYLOAD)
  print(f"- coded: {_coded(result.coded)}")
  below, above = result.gaps
  if result.below is not None:
    print(f"- jpeg at or below: {_row(result.below)}: the joint point is "
          f"{100 * below:+.2f} points")
  else:
    print(f"- jpeg cannot go that low: its cheapest row is above it, so "
          f"JPEG at {CLAIM_PAYLOAD:.1f} B is <= that row's accuracy")
  if result.above is not None:
    print(f"- jpeg above: {_row(result.above)}: the joint point is "
          f"{100 * above:+.2f} points")
  # The gap at the payload itself lies between the two; the claim holds
  # for sure only if it holds against the row above.
  known = [gap for gap in (below, above) if gap is not None]
  met = bool(known) and min(known) >= CLAIM_GAP
  between = ", ".join(f"{100 * gap:+.2f}" for gap in known)
  print(f"  claim >= +{100 * CLAIM_GAP:.0f} points: {_verdict(met)} "
        f"(the gap at {CLAIM_PAYLOAD:.1f} B lies between {between} points)")
  return met


def _edge_time():
  print(f"\n## 4. edge time against Pillow's JPEG (target <= "
        f"{EDGE_JPEG_RATIO}x)\n", flush=True)
  bench = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "bench_edge.py")
  command = [sys.executable, bench, f"--bundle={FLAGS.edge_bundle}",
             f"--images={FLAGS.edge_images}", "--jpeg_qualities=50,75,90",
             f"--jpeg_ratio={EDGE_JPEG_RATIO}"]
  if FLAGS.data_dir:
    command.append(f"--data_dir={FLAGS.data_dir}")
  result = subprocess.run(command, stdout=subprocess.PIPE, text=True)
  print(result.stdout)
  return result.returncode == 0 and (
      f"<= {EDGE_JPEG_RATIO}x JPEG's fastest encode: met" in result.stdout)


def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.runs:
    raise UserError("give --runs (frontier and model dirs)")
  points = points_lib.load_runs(FLAGS.runs) + [
      p for spec in FLAGS.baselines for p in points_lib.load_baselines(spec)]
  budgets = parse_budgets(FLAGS.budgets or ["8KB", "24KB", "96KB"])
  results = [_beats_the_class(points, budgets), _codec_bytes(points),
             _claim(points)]
  if FLAGS.edge_bundle:
    results.append(_edge_time())
  missed = [str(n) for n, ok in enumerate(results, start=1) if not ok]
  print(f"\ntargets missed: {', '.join(missed)}" if missed
        else "\nevery target met")
  return 1 if missed else 0


if __name__ == "__main__":
  cli.run(main)
