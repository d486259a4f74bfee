"""The edge budget as an axis: points carry board.json, tables per budget."""

import dataclasses
import json
import os

import pytest

from tests.conftest import run_cli
from tests.test_report import write_baselines, write_run
from tfvaeclf.errors import UserError
from tfvaeclf.experiments import budgets, frontier, plots, report
from tfvaeclf.experiments import points as points_lib

# Hand-made board.json figures: name -> (int8 bytes, MACs, accuracy).
MODELS = {"small": (3000, 40_000, .93), "large": (15_000, 900_000, .97),
          "huge": (200_000, 9_000_000, .99)}
CLASSIFIERS = {"tiny_cls": (4000, .60), "mid_cls": (18_000, .80)}


def write_board(directory, int8_bytes, macs, accuracy, **extra):
  with open(os.path.join(directory, "board.json"), "w") as f:
    json.dump({"edge_int8_bytes": int8_bytes, "edge_macs": macs,
               "edge_arena_bytes": 2048, "board_model_bytes": 0,
               "accuracy": accuracy, **extra}, f)


def write_classifier(directory, int8_bytes, accuracy):
  os.makedirs(directory)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump({"model": "classifier", "dataset": {"name": "mnist"},
               "model_config": {"image_shape": [28, 28, 1]}}, f)
  write_board(directory, int8_bytes, 5_000_000, accuracy, model="classifier",
              class_bits=4, num_classes=10)
  return str(directory)


@pytest.fixture
def runs(tmp_path):
  root = tmp_path / "runs"
  for i, (name, (size, macs, accuracy)) in enumerate(MODELS.items()):
    directory = write_run(root / name, "mnist", accuracy - .01,
                          .05 * (i + 1), 4.9 * (i + 1), None)
    write_board(directory, size, macs, accuracy - .02)
  write_run(root / "unmeasured", "mnist", .9, .02, 2., None)
  for name, (size, accuracy) in CLASSIFIERS.items():
    write_classifier(root / name, size, accuracy)
  return str(root)


def test_budgets_parse_in_decimal_and_binary_units():
  assert budgets.parse_budgets(["80KB", "5kb", "20KiB", "100"]) == [
      100, 5000, 20480, 80000]
  for bad in (["5XB"], ["KB"], ["0KB"], ["5KB", "5000"]):
    with pytest.raises(UserError):
      budgets.parse_budgets(bad)


def test_points_carry_the_budget_and_the_class_is_a_point(runs):
  found = {p.name: p for p in points_lib.load_runs([runs])}
  small = found["small"]
  assert (small.kind, small.edge_int8_bytes, small.edge_macs,
          small.edge_arena_bytes) == ("model", 3000, 40_000, 2048)
  assert small.board_accuracy == pytest.approx(.91)
  assert found["unmeasured"].edge_int8_bytes is None
  assert found["unmeasured"].board_accuracy is None
  tiny = found["tiny_cls"]
  assert tiny.kind == points_lib.BOARD and tiny.accuracy == .6
  assert tiny.bytes_per_image == tiny.payload_bytes_per_image == .5
  assert tiny.bpp == pytest.approx(4 / 784)
  assert tiny.edge_int8_bytes == 4000
  assert budgets.budget_of(small, [5000, 20000]) == 5000
  assert budgets.budget_of(found["huge"], [5000, 20000]) is None
  assert budgets.best_on_board(found.values(), 20000) is found["mid_cls"]
  assert budgets.best_on_board(found.values(), 3000) is None
  assert budgets.budget_label(15_000, 1_200_000) == "15 KB int8, 1.2 M MAC"


def _tables(summary):
  """{budget title: [row's first cell]} of budget_markdown's text."""
  tables, title = {}, None
  for line in summary.splitlines():
    if line.startswith("#### "):
      title = line[5:]
      tables[title] = []
    elif title and line.startswith("| ") and not line.startswith(
        ("| point", "| ---")):
      tables[title].append(line.split(" | ")[0][2:])
    elif line.startswith("### "):
      title = None
  return tables


def test_report_writes_a_table_per_budget(runs, tmp_path, capsys):
  rates = write_baselines(tmp_path / "baselines_mnist.csv")
  out = tmp_path / "report"
  code, stdout, stderr = run_cli(report.main, [
      f"--runs={runs}", f"--baselines={rates}", f"--out={out}",
      "--budgets=5KB,20KB"], capsys)
  assert code is None, stderr
  tables = _tables((out / "summary.md").read_text())
  codecs = [f"codec {name}" for name in ("c1",) * 3 + ("c2",) * 2
            + ("c3",) * 2]
  assert tables == {
      "≤ 5 KB of int8 on the board": [
          "small", "send the class: tiny_cls", *codecs],
      "≤ 20 KB of int8 on the board": [
          "large", "send the class: mid_cls", *codecs]}
  assert "Above 20 KB: huge." in stdout
  assert "No board.json (python -m tfvaeclf.experiments.board): " \
         "unmeasured." in stdout
  assert (out / "accuracy_mnist.png").stat().st_size > 10_000
  with open(out / "points.json") as f:
    rows = {row["name"]: row for row in json.load(f)}
  assert rows["tiny_cls"]["kind"] == "board"
  assert rows["small"]["edge_macs"] == 40_000


def test_the_legend_names_each_points_budget(runs, tmp_path, monkeypatch):
  labels = []
  monkeypatch.setattr(plots, "save", lambda figure, *_, **__: labels.extend(
      handle.get_label() for axes in figure.axes
      for handle in axes.get_legend().legend_handles))
  points = points_lib.load_runs([runs])
  plots.accuracy_vs_rate("mnist", points, None, plots.codec_colors(points),
                         plots.model_markers(points), tmp_path / "a.png")
  assert "large (joint, factorized, λ=0.7) · 15 KB int8, 900 k MAC" in labels
  assert "send the class: tiny_cls · 4 KB int8, 5 M MAC" in labels
  assert "unmeasured (joint, factorized, λ=0.7)" in labels


def test_frontier_tables_hold_its_points_the_class_and_the_codecs(
    runs, tmp_path):
  rates = write_baselines(tmp_path / "baselines_mnist.csv")
  classifiers = [p for p in points_lib.load_runs([runs])
                 if p.kind == points_lib.BOARD]
  summary = frontier.budget_tables(
      "mnist", [os.path.join(runs, name) for name in MODELS], classifiers,
      [rates], [5000, 20000])
  tables = _tables(summary)
  assert tables["≤ 5 KB of int8 on the board"][:2] == [
      "small", "send the class: tiny_cls"]
  assert tables["≤ 20 KB of int8 on the board"][:2] == [
      "large", "send the class: mid_cls"]
  assert len(tables["≤ 20 KB of int8 on the board"]) == 2 + len(
      open(rates).read().splitlines()) - 1


def test_budget_flags_are_one_line_errors(runs, tmp_path, capsys):
  code, _, stderr = run_cli(report.main, [
      f"--runs={runs}", f"--out={tmp_path}", "--budgets=5XB"], capsys)
  assert code == 2 and stderr.count("\n") == 1 and "--budgets=5XB" in stderr
  code, _, stderr = run_cli(frontier.main, [
      "--model=joint", "--dataset=mnist", f"--out={tmp_path}",
      f"--classifiers={runs}"], capsys)
  assert code == 2 and stderr.count("\n") == 1 and "--budgets" in stderr


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", "", '"board"'])
def test_a_broken_board_json_is_one_line(tmp_path, text):
  run = str(tmp_path / "alpha")
  write_run(run, "mnist", 0.98, 0.1, 9.8, None)
  (tmp_path / "alpha" / "board.json").write_text(text)
  with pytest.raises(UserError) as excinfo:
    points_lib.load_run(run)
  assert "board.json" in str(excinfo.value)
  assert "\n" not in str(excinfo.value)


def test_a_coders_float32_board_models_count_in_its_budget():
  """A context coder's slice coder runs on the board beside the int8
  encoder: the board stores both."""
  point = points_lib.Point("cifar10", "model", "context", "joint", 1., 1.,
                           10., 10., accuracy=.5, edge_int8_bytes=3000,
                           board_model_bytes=10_000)
  assert budgets.stored_bytes(point) == 13_000
  assert budgets.budget_of(point, [5000, 20_000]) == 20_000
  alone = dataclasses.replace(point, board_model_bytes=0)
  assert budgets.budget_of(alone, [5000, 20_000]) == 5000
  assert budgets.budget_of(point, [5000, 12_000]) is None
