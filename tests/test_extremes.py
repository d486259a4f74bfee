"""Both trivial extremes beside a frontier: sending the class from the
board, sending the image with a codec; tools/bench_cifar10.py's targets."""

import csv
import dataclasses
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.test_budgets import write_board, write_classifier
from tests.test_report import write_run
from tfvaeclf.experiments import extremes
from tfvaeclf.experiments import points as points_lib

BUDGETS = [8000, 24000, 96000]
# name -> (payload bytes, Keras accuracy, int8 bytes, int8 accuracy)
JOINT = {"j5_low": (20, .58, 4000, .57), "j5_high": (60, .62, 4000, .61),
         "j20_low": (25, .73, 17000, .725), "j20_high": (110, .78, 17000, .775),
         "j80_low": (30, .80, 85000, .79), "j80_mid": (120, .84, 85000, .835),
         "j80_high": (300, .86, 85000, .86)}
CLASSIFIERS = {"plain": (7400, .50), "w6": (22000, .69), "r8": (94000, .80)}
# codec, quality, payload bytes, accuracy as trained, fine-tuned
CODECS = [("jpeg", 5, 150, .40, .55), ("jpeg", 50, 400, .70, .80),
          ("jpeg", 90, 900, .85, .86), ("webp", 0, 100, .45, .60),
          ("webp", 50, 500, .80, .84), ("av1", 63, 200, .60, .70)]


@pytest.fixture
def world(tmp_path):
  """Joint points at three budgets, a classifier on the board per budget,
  and three codecs with fine-tuned readers: CIFAR-10-like figures."""
  root = tmp_path / "runs"
  for name, (payload, accuracy, int8_bytes, on_board) in JOINT.items():
    directory = write_run(root / name, "cifar10", accuracy,
                          8 * payload / 1024, payload, None)
    write_board(directory, int8_bytes, 1_000_000, on_board)
  for name, (int8_bytes, accuracy) in CLASSIFIERS.items():
    write_classifier(root / name, int8_bytes, accuracy)
  table = tmp_path / "baselines_cifar10.csv"
  with open(table, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["codec", "quality", "bytes_per_image",
                     "payload_bytes_per_image", "bpp", "payload_bpp",
                     "accuracy", "finetuned_accuracy"])
    for codec, quality, payload, accuracy, tuned in CODECS:
      writer.writerow([codec, quality, payload + 300, payload,
                       8 * (payload + 300) / 1024, 8 * payload / 1024,
                       accuracy, tuned])
  return str(root), str(table)


def _points(world):
  root, table = world
  return points_lib.load_runs([root]) + points_lib.load_baselines(table)


def test_each_budget_sets_its_best_cheap_point_against_its_classifier(world):
  results = extremes.beats_the_class(_points(world), BUDGETS, 32)
  assert [(r.coded.name, r.board.name) for r in results] == [
      ("j5_low", "plain"), ("j20_low", "w6"), ("j80_low", "r8")]
  # The int8 accuracy on the board counts, not Keras'.
  assert [round(100 * r.gain, 2) for r in results] == [7.0, 3.5, -1.0]


def test_a_budget_without_a_classifier_or_a_cheap_point_has_no_gain(world):
  points = [p for p in _points(world) if p.name not in ("plain", "j20_low")]
  results = extremes.beats_the_class(points, BUDGETS, 32)
  assert results[0].board is None and results[0].gain is None
  assert results[1].coded is None and results[1].gain is None


def test_codecs_need_bytes_for_the_best_point_within_the_payload(world):
  result = extremes.codec_bytes_to_match(_points(world), 128)
  assert result.coded.name == "j80_mid"  # j80_high sends 300 B
  assert {c: m and m.setting for c, m in result.matches.items()} == {
      "jpeg": "90", "webp": "50", "av1": None}
  assert result.ratio("jpeg") == pytest.approx(900 / 120)
  assert result.ratio("webp") == pytest.approx(500 / 120)
  assert result.ratio("av1") is None
  assert list(result.best_rows) == ["av1"]


def test_a_payload_is_bracketed_by_the_codecs_rows_either_side(world):
  jpeg = extremes.gap_at_payload(_points(world), "jpeg", 102.4)
  assert jpeg.coded.name == "j80_low"
  # JPEG cannot go that low: only a row above, the gap at least that one.
  assert jpeg.below is None and jpeg.above.setting == "5"
  assert jpeg.gaps == (None, pytest.approx(.79 - .55))
  webp = extremes.gap_at_payload(_points(world), "webp", 102.4)
  assert (webp.below.setting, webp.above.setting) == ("0", "50")
  assert webp.gaps == (pytest.approx(.79 - .60), pytest.approx(.79 - .84))


def test_the_benchmark_prints_each_target_and_fails_on_a_miss(world):
  root, table = world
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", "bench_cifar10.py"),
       f"--runs={root}", f"--baselines={table}",
       "--budgets=8KB,24KB,96KB"],
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stderr
  out = result.stdout
  assert "target >= +3 points: met (+7.00 points)" in out
  assert "target >= +3 points: MISSED (-1.00 points)" in out
  assert "moonshot" in out and "(72.50% against 80.00%)" in out
  assert "- jpeg: q 90, 86.00% at 900.0 B payload (1200.0 B file): 7.5x" in out
  assert "- webp: q 50, 84.00% at 500.0 B payload (800.0 B file): 4.2x" in out
  assert "- av1: no setting reaches it; its best, CRF 63, is 70.00%" in out
  assert "jpeg cannot go that low" in out
  assert "jpeg above: q 5, 55.00% at 150.0 B payload: the joint point is " \
      "+24.00 points" in out
  assert "targets missed: 1, 2" in out


def test_a_codec_counts_its_better_reader():
  """Fine-tuning that lost accuracy (a near-lossless setting) does not
  lower the codec's row: the reader as trained counts there."""
  row = points_lib.Point(
      dataset="cifar10", kind="codec", name="jpeg", setting="75", bpp=1.,
      payload_bpp=1., bytes_per_image=1., payload_bytes_per_image=1.,
      accuracy=.8961, finetuned_accuracy=.8831)
  assert extremes.codec_accuracy(row) == .8961
  tuned = dataclasses.replace(row, finetuned_accuracy=.9)
  assert extremes.codec_accuracy(tuned) == .9
  assert extremes.codec_accuracy(dataclasses.replace(
      row, finetuned_accuracy=None)) == .8961
