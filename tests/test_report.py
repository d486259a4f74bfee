"""The rate-accuracy report, from hand-made model dirs and rate tables."""

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from tfvaeclf.experiments import plots, report
from tfvaeclf.experiments import points as points_lib
from tests.conftest import run_cli
from tests.support import hostile

# Hand-made: (dataset, accuracy, bpp, bytes per image, psnr).
RUNS = {
    "alpha": ("mnist", 0.98, 0.1, 9.8, None),
    "beta": ("mnist", 0.95, 0.05, 4.9, 21.5),
    "gamma": ("fashion_mnist", 0.87, 0.12, 11.76, None),
}
# codec, quality, bpp, payload bpp, accuracy, psnr (784-pixel images).
# c1 crosses 98% between its 2nd and 3rd quality; c2 never gets there;
# c3 is already there at its lowest quality.
BASELINE_ROWS = [
    ("c1", 10, 1., .5, .90, 20.), ("c1", 50, 2., 1., .97, 25.),
    ("c1", 90, 4., 2., .99, 30.),
    ("c2", 1, 1., .8, .50, 18.), ("c2", 2, 3., 2.4, .60, 22.),
    ("c3", 7, 3., 1.5, .99, 35.), ("c3", 9, 6., 3., .995, 40.),
]
COLUMNS = ["codec", "quality", "bytes_per_image", "payload_bytes_per_image",
           "bpp", "payload_bpp", "psnr"]


def write_run(directory, dataset, accuracy, bpp, size, psnr, evaluated=True):
  os.makedirs(directory)
  config = {"model": "joint", "dataset": {"name": dataset, "seed": 0},
            "model_config": {"entropy_model": "factorized", "lmbda": 0.7}}
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(config, f)
  if evaluated:
    results = {"accuracy": accuracy, "bpp": bpp, "bytes_per_image": size,
               "estimated_bpp": bpp * 0.97, "cross_entropy": 0.1,
               "num_images": 100}
    if psnr is not None:
      results["psnr"] = psnr
    with open(os.path.join(directory, "eval.json"), "w") as f:
      json.dump(results, f)
  return str(directory)


def write_baselines(path, with_accuracy=True, dataset_column=None):
  columns = COLUMNS + (["accuracy"] if with_accuracy else [])
  columns += ["dataset"] if dataset_column else []
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    for codec, quality, bpp, payload_bpp, accuracy, psnr in BASELINE_ROWS:
      row = [codec, quality, bpp * 98, payload_bpp * 98, bpp, payload_bpp,
             psnr] + ([accuracy] if with_accuracy else [])
      writer.writerow(row + ([dataset_column] if dataset_column else []))
  return str(path)


@pytest.fixture
def runs(tmp_path):
  root = tmp_path / "runs"
  for name, values in RUNS.items():
    write_run(root / name, *values)
  write_run(root / "unevaluated", "mnist", 0, 0, 0, None, evaluated=False)
  os.makedirs(root / "alpha" / "logs")  # not a model dir: ignored
  return str(root)


@pytest.fixture
def rates(tmp_path):
  return write_baselines(tmp_path / "baselines_mnist.csv")


def report_cli(argv, capsys):
  return run_cli(report.main, argv, capsys)


def test_writes_exactly_the_expected_points(runs, rates, tmp_path, capsys):
  out = tmp_path / "out"
  code, stdout, stderr = report_cli(
      [f"--runs={runs}", f"--baselines={rates}", f"--out={out}"], capsys)
  assert code in (0, None)
  with open(out / "points.csv", newline="") as f:
    rows = list(csv.DictReader(f))
  assert [tuple(r) for r in rows] == [report.FIELDS] * len(rows)
  keys = [(r["dataset"], r["kind"], r["name"], r["setting"]) for r in rows]
  assert keys == [
      ("fashion_mnist", "model", "gamma", "joint, factorized, λ=0.7"),
      ("mnist", "model", "alpha", "joint, factorized, λ=0.7"),
      ("mnist", "model", "beta", "joint, factorized, λ=0.7"),
      *[("mnist", "codec", c, str(q)) for c, q, *_ in BASELINE_ROWS]]
  alpha, beta = rows[1], rows[2]
  assert float(alpha["bpp"]) == float(alpha["payload_bpp"]) == 0.1
  assert float(alpha["bytes_per_image"]) == 9.8
  assert float(alpha["payload_bytes_per_image"]) == 9.8
  assert float(alpha["accuracy"]) == 0.98
  assert alpha["psnr"] == "" and float(beta["psnr"]) == 21.5
  for row, (_, _, bpp, payload_bpp, accuracy, psnr) in zip(rows[3:],
                                                           BASELINE_ROWS):
    assert float(row["bpp"]) == bpp
    assert float(row["payload_bpp"]) == payload_bpp
    assert float(row["bytes_per_image"]) == pytest.approx(bpp * 98)
    assert float(row["payload_bytes_per_image"]) == pytest.approx(
        payload_bpp * 98)
    assert float(row["accuracy"]) == accuracy
    assert float(row["psnr"]) == psnr
    assert row["finetuned_accuracy"] == ""

  with open(out / "points.json") as f:
    points = json.load(f)
  assert len(points) == len(rows)
  for point, row in zip(points, rows):
    assert set(point) == set(report.FIELDS)
    for key, value in point.items():
      assert ("" if value is None else str(value)) == row[key]

  # The skipped dir is one line on stderr; the summary goes to stdout.
  skipped = [line for line in stderr.splitlines() if "skipping" in line]
  assert len(skipped) == 1 and "unevaluated" in skipped[0]
  assert "no eval.json" in skipped[0]
  assert "| c1 |" in stdout


def assert_png(path, min_size=(600, 400)):
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with Image.open(path) as image:
    image.verify()
  with Image.open(path) as image:
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    assert image.size[0] <= 3000 and image.size[1] <= 3000


@pytest.mark.parametrize("fields, whole", [
    ({"file_bytes_per_image": 43.8}, 43.8),
    ({"file_bytes_per_image": 43.8, "message_bytes_per_image": 14.8}, 14.8),
])
def test_a_models_whole_rate_is_its_one_image_message(tmp_path, capsys,
                                                      fields, whole):
  """The whole rate is a one-image message, or file in an older eval.json;
  the payload is the strings."""
  run = write_run(tmp_path / "runs" / "delta", "mnist", .98, .1, 9.8, None)
  with open(os.path.join(run, "eval.json")) as f:
    results = json.load(f)
  results.update(fields)
  with open(os.path.join(run, "eval.json"), "w") as f:
    json.dump(results, f)
  out = tmp_path / "out"
  code, _, _ = report_cli([f"--runs={run}", f"--out={out}"], capsys)
  assert code in (0, None)
  with open(out / "points.csv", newline="") as f:
    (row,) = list(csv.DictReader(f))
  assert float(row["bytes_per_image"]) == whole
  assert float(row["payload_bytes_per_image"]) == 9.8
  assert float(row["bpp"]) == pytest.approx(whole * 8 / 784)
  assert float(row["payload_bpp"]) == 0.1


def test_writes_the_plots(runs, rates, tmp_path, capsys):
  out = tmp_path / "out"
  code, _, _ = report_cli([f"--runs={runs}", f"--baselines={rates}",
                           f"--out={out}", "--reference=mnist:0.992"],
                          capsys)
  assert code in (0, None)
  for name in ("accuracy_mnist.png", "accuracy_fashion_mnist.png",
               "psnr_mnist.png"):
    assert_png(out / name)
  # Fashion-MNIST has neither codecs nor a model with PSNR here.
  assert not os.path.exists(out / "psnr_fashion_mnist.png")


def test_matched_rate_interpolates_along_the_sweep(rates):
  points = points_lib.load_baselines(rates)
  sweeps = points_lib.codec_sweeps(points)
  # 98% lies halfway (in accuracy) between 2 and 4 bpp: the log-scale
  # midpoint, sqrt(2 * 4).
  assert report.matched_rate(sweeps["c1"], 0.98) == pytest.approx(
      math.sqrt(8))
  assert report.matched_rate(sweeps["c1"], 0.98, "payload_bpp") == (
      pytest.approx(math.sqrt(2)))
  assert report.matched_rate(sweeps["c2"], 0.98) is None
  assert report.matched_rate(sweeps["c3"], 0.98) == 3.
  assert report.matched_rate(sweeps["c1"], 0.90) == 1.  # at a sweep point


def test_psnr_at_a_models_rate_is_read_along_each_codec(runs, rates,
                                                         tmp_path, capsys):
  sweeps = points_lib.codec_sweeps(points_lib.load_baselines(rates))
  # c1's payload: 49, 98, 196 bytes at 20, 25, 30 dB. The log-scale
  # midpoint of its first two qualities lies halfway in PSNR.
  middle = math.sqrt(49 * 98)
  assert report.psnr_at_rate(sweeps["c1"], middle) == pytest.approx(22.5)
  assert report.psnr_at_rate(sweeps["c1"], 196.) == pytest.approx(30.)
  assert report.psnr_at_rate(sweeps["c1"], 40.) is None  # not extrapolated
  assert report.psnr_at_rate(sweeps["c1"], 98., "bytes_per_image") == 20.
  write_run(tmp_path / "runs" / "delta", "mnist", 0.9, middle / 98, middle,
            23.)
  out = tmp_path / "out"
  report_cli([f"--runs={runs}", f"--baselines={rates}", f"--out={out}"],
             capsys)
  summary = (out / "summary.md").read_text()
  assert "### mnist: PSNR at the models' rates" in summary
  payload = summary.split("(payload only) | PSNR")[1].split("\n\n")[0]
  assert ("| delta (joint, factorized, λ=0.7) | 69.3 | 23.00 | "
          "22.50 (+0.50) | outside its rates | outside its rates |"
          in payload)
  assert "| beta (joint, factorized, λ=0.7) | 4.9 | 21.50 |" in payload
  # The other way round: where each codec first reaches delta's 23 dB.
  # c1 between its first two qualities (t = 0.6 in PSNR, so 2^0.6 times
  # their lower rate); c2 never; c3 at its lowest quality already.
  assert ("| delta (joint, factorized, λ=0.7) | 23.00 | 149 (2.1x) | "
          "74.3 (1.1x) | not reached (–) | not reached (–) | "
          "≤ 294 (≤ 4.2x) | ≤ 147 (≤ 2.1x) |") in summary
  # No model of fashion_mnist has a PSNR: no such table.
  assert "fashion_mnist: PSNR" not in summary


def test_matched_rate_takes_the_smallest_crossing_and_skips_gaps():
  point = lambda bpp, accuracy: points_lib.Point(  # noqa: E731
      "d", "codec", "c", "q", bpp, bpp, bpp, bpp, accuracy)
  # Not monotone: reaches 0.8 first at 2 bpp, dips, reaches it again.
  sweep = [point(1, .6), point(2, .8), point(4, .7), point(8, .9)]
  assert report.matched_rate(sweep, .8) == 2.
  # Unmeasured qualities are left out of the curve.
  sweep = [point(1, .6), point(2, None), point(4, 1.)]
  assert report.matched_rate(sweep, .8) == pytest.approx(
      math.exp(math.log(1) + 0.5 * math.log(4)))
  assert report.matched_rate([point(1, None)], .8) is None


def test_summary_table(runs, rates, tmp_path, capsys):
  out = tmp_path / "out"
  report_cli([f"--runs={runs}", f"--baselines={rates}", f"--out={out}"],
             capsys)
  summary = (out / "summary.md").read_text()
  assert "Best model: alpha (joint, factorized, λ=0.7), 98.00%" in summary
  # Model 9.8 bytes (0.1 bpp): c1 needs sqrt(8) = 2.83 bpp whole, 277
  # bytes, and sqrt(2) payload, 139 bytes.
  assert "| c1 | 277 | 28.3x | 139 | 14.1x |" in summary
  assert "| c2 | not reached | – | not reached | – |" in summary
  # c3 is there at its lowest quality: only a bound.
  assert "| c3 | ≤ 294 | ≤ 30.0x | ≤ 147 | ≤ 15.0x |" in summary
  assert "### fashion_mnist" in summary


def test_finetuned_accuracy_and_dataset_column(runs, tmp_path, capsys):
  path = tmp_path / "rates.csv"  # no dataset in the name: the column says
  write_baselines(path, dataset_column="mnist")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  for row in rows:
    row["finetuned_accuracy"] = min(1., float(row["accuracy"]) + 0.01)
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  out = tmp_path / "out"
  code, _, _ = report_cli([f"--runs={runs}", f"--baselines={path}",
                           f"--out={out}"], capsys)
  assert code in (0, None)
  with open(out / "points.json") as f:
    codecs = [p for p in json.load(f) if p["kind"] == "codec"]
  assert [p["finetuned_accuracy"] for p in codecs] == [
      pytest.approx(min(1., a + 0.01)) for *_, a, _ in BASELINE_ROWS]
  summary = (out / "summary.md").read_text()
  assert "| c1 | as trained | 277 |" in summary
  assert "| c1 | fine-tuned on decoded images |" in summary
  assert_png(out / "accuracy_mnist.png")


def test_rate_only_baselines_and_dataset_prefix(runs, tmp_path, capsys):
  path = write_baselines(tmp_path / "rates.csv", with_accuracy=False)
  out = tmp_path / "out"
  code, _, _ = report_cli([f"--runs={runs}",
                           f"--baselines=fashion_mnist:{path}",
                           f"--out={out}"], capsys)
  assert code in (0, None)
  with open(out / "points.json") as f:
    codecs = [p for p in json.load(f) if p["kind"] == "codec"]
  assert len(codecs) == len(BASELINE_ROWS)
  assert {p["dataset"] for p in codecs} == {"fashion_mnist"}
  assert all(p["accuracy"] is None for p in codecs)
  assert all(p["psnr"] is not None for p in codecs)
  summary = (out / "summary.md").read_text()
  assert "no accuracy column: rates only" in summary
  assert_png(out / "accuracy_fashion_mnist.png")
  assert_png(out / "psnr_fashion_mnist.png")


def test_single_model_dir_and_reference_forms(runs, rates, tmp_path,
                                              capsys):
  out = tmp_path / "out"
  code, _, _ = report_cli([f"--runs={os.path.join(runs, 'alpha')}",
                           f"--baselines={rates}", f"--out={out}",
                           "--reference=mnist:99.2%",
                           "--reference=fashion_mnist:0.9,cifar10:0.8"],
                          capsys)
  assert code in (0, None)
  with open(out / "points.json") as f:
    assert [p["name"] for p in json.load(f) if p["kind"] == "model"] == [
        "alpha"]
  assert report.parse_references(["mnist:99.2%", "a:0.5,b:1"]) == {
      "mnist": pytest.approx(0.992), "a": 0.5, "b": 1.}


def test_an_uncompressed_classifier_run_is_the_reference_line(
    runs, tmp_path, capsys, monkeypatch):
  reference = write_run(tmp_path / "clean", "mnist", .991, 8., 784., None)
  with open(os.path.join(reference, "eval.json")) as f:
    results = json.load(f)
  with open(os.path.join(reference, "eval.json"), "w") as f:
    json.dump({**results, "uncompressed": True}, f)
  seen = {}
  write_report = report.write_report
  monkeypatch.setattr(report, "write_report", lambda points, refs, out, **kw: (
      seen.update(refs=refs, names=[p.name for p in points]),
      write_report(points, refs, out, **kw))[1])
  code, _, _ = report_cli([f"--runs={runs},{reference}",
                           f"--out={tmp_path / 'out'}"], capsys)
  assert code in (0, None)
  assert seen["refs"] == {"mnist": .991}
  assert "clean" not in seen["names"] and "alpha" in seen["names"]
  code, _, _ = report_cli([f"--runs={reference},{runs}",
                           "--reference=mnist:0.5",
                           f"--out={tmp_path / 'out2'}"], capsys)
  assert seen["refs"] == {"mnist": .5}  # --reference wins


def test_model_dirs_nested_deeper_are_named_not_read(runs, tmp_path):
  for name in ("search/trials/1", "search/trials/2", "sweep/a"):
    write_run(os.path.join(runs, name), "mnist", .9, .1, 9.8, None)
  notes = []
  points = points_lib.load_runs([runs], note=notes.append)
  assert {p.name for p in points} == {"alpha", "beta", "gamma"}
  search, sweep = os.path.join(runs, "search"), os.path.join(runs, "sweep")
  assert [n for n in notes if "model dirs nested" in n] == [
      f"skipping 3 model dirs nested deeper in {search}, {sweep} (--runs "
      "takes model dirs and their parents, e.g. "
      f"--runs={os.path.join(search, 'trials')})"]
  trials = points_lib.load_runs([os.path.join(search, "trials")])
  assert [p.name for p in trials] == ["1", "2"]


@pytest.mark.parametrize("given, missing", [
    (["--runs=RUNS"], "--out is required"),
    (["--out=OUT"], "nothing to read: give --runs="),
])
def test_a_missing_flag_is_named(given, missing, runs, tmp_path, capsys):
  argv = [arg.replace("RUNS", runs).replace("OUT", str(tmp_path / "out"))
          for arg in given]
  code, _, stderr = report_cli(argv, capsys)
  assert code == 2
  assert stderr.count("\n") == 1 and stderr.startswith(f"error: {missing}")


def test_a_tiny_baselines_file_name_gives_the_dataset(tmp_path):
  path = write_baselines(tmp_path / "baselines_cifar10.csv")
  assert {p.dataset for p in points_lib.load_baselines(path)} == {"cifar10"}


@pytest.mark.parametrize("case", [
    "missing_runs", "not_a_run_dir", "missing_csv", "not_baselines",
    "bad_number", "no_dataset", "nothing_evaluated", "bad_reference",
    "no_out", "bad_eval_json"])
def test_user_errors_are_one_line_exit_2(case, runs, rates, tmp_path,
                                         capsys):
  out = f"--out={tmp_path / 'out'}"
  empty = tmp_path / "empty"
  os.makedirs(empty)
  junk = tmp_path / "junk.csv"
  junk.write_text("a,b\n1,2\n")
  bad = tmp_path / "baselines_mnist_bad.csv"
  bad.write_text(open(rates).read().replace(",2.0,", ",two,", 1))
  unevaluated = tmp_path / "only_unevaluated"
  write_run(unevaluated / "x", "mnist", 0, 0, 0, None, evaluated=False)
  broken = tmp_path / "broken"
  write_run(broken, "mnist", .9, .1, 9.8, None)
  (broken / "eval.json").write_text("{not json")
  argv = {
      "missing_runs": [f"--runs={tmp_path / 'nope'}", out],
      "not_a_run_dir": [f"--runs={empty}", out],
      "missing_csv": [f"--baselines={tmp_path / 'baselines_none.csv'}",
                      out],
      "not_baselines": [f"--baselines=mnist:{junk}", out],
      "bad_number": [f"--baselines={bad}", out],
      "no_dataset": [f"--baselines={write_baselines(tmp_path / 'r.csv')}",
                     out],
      "nothing_evaluated": [f"--runs={unevaluated}", out],
      "bad_reference": [f"--runs={runs}", "--reference=mnist:99.2", out],
      "no_out": [f"--runs={runs}"],
      "bad_eval_json": [f"--runs={broken}", out],
  }[case]
  code, stdout, stderr = report_cli(argv, capsys)
  assert code == 2
  errors = [line for line in stderr.splitlines() if line.startswith("error")]
  assert len(errors) == 1 and stderr.rstrip().endswith(errors[0])
  # Only the skip note may come before the error line.
  assert all("skipping" in line for line in stderr.splitlines()[:-1])
  assert not os.path.exists(tmp_path / "out" / "points.csv")


@pytest.mark.parametrize("model, model_config, setting", [
    ("rdc", {"lmbda": 0., "lambda_cls": 0.03}, "rdc, λ_cls=0.03"),
    ("beta_vae", {"entropy_model": "factorized", "lmbda": 0., "beta": 3.},
     "beta_vae, factorized, β=3"),
    ("grouped_vae", {"entropy_model": "factorized", "lmbda": 0.3,
                     "beta": 1.}, "grouped_vae, factorized, β=1, λ_rate=0.3"),
    ("split", {"entropy_model": "context", "lmbda": 2.},
     "split, context, λ=2"),
])
def test_a_model_is_labelled_with_its_objectives_weight(
    model, model_config, setting, tmp_path):
  directory = write_run(tmp_path / "run", "mnist", .9, .1, 9.8, None)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump({"model": model, "dataset": {"name": "mnist"},
               "model_config": model_config}, f)
  assert points_lib.load_run(directory).setting == setting


def _figures(monkeypatch):
  """The figures `write_report` saves, by file name."""
  figures, save = {}, plots.save
  def keep(figure, path):
    save(figure, path)
    figures[os.path.basename(path)] = figure
  monkeypatch.setattr(plots, "save", keep)
  return figures


def _model_markers(figure):
  return {line.get_label().split(" (")[0]: line.get_marker()
          for line in figure.axes[0].get_lines()
          if line.get_label().endswith(")")}


def test_a_model_keeps_its_marker_in_every_plot(tmp_path, monkeypatch):
  points = [points_lib.Point("mnist", "model", name, "joint", .1 * (i + 1),
                             .1 * (i + 1), 10., 10., accuracy=.9,
                             psnr=20. if name != "a" else None)
            for i, name in enumerate("abc")]
  figures = _figures(monkeypatch)
  report.write_report(points, {}, str(tmp_path), note=lambda line: None)
  accuracy = _model_markers(figures["accuracy_mnist.png"])
  psnr = _model_markers(figures["psnr_mnist.png"])
  assert set(accuracy) == {"a", "b", "c"} and set(psnr) == {"b", "c"}
  assert len(set(accuracy.values())) == 3
  assert {name: accuracy[name] for name in psnr} == psnr


def test_model_names_in_a_crowded_plot_do_not_overlap(tmp_path, monkeypatch):
  points = [points_lib.Point("mnist", "model", f"model_{i:02d}", "joint",
                             .1 * 1.02 ** i, .1 * 1.02 ** i, 10., 10.,
                             accuracy=.9 + .001 * (i % 5))
            for i in range(30)]
  figures = _figures(monkeypatch)
  report.write_report(points, {}, str(tmp_path), note=lambda line: None)
  figure = figures["accuracy_mnist.png"]
  renderer = figure.canvas.get_renderer()
  shown = [text.get_window_extent(renderer)
           for text in figure.axes[0].texts if text.get_visible()]
  assert 3 <= len(shown) < 30
  for i, box in enumerate(shown):
    assert not any(box.overlaps(other) for other in shown[i + 1:])
  assert_png(tmp_path / "accuracy_mnist.png")


def test_the_plot_draws_the_models_pareto_front():
  from matplotlib.figure import Figure
  models = [points_lib.Point("mnist", "model", name, "", bpp, payload_bpp, 0, 0,
                             accuracy)
            for name, bpp, payload_bpp, accuracy in
            [("a", 1., .2, .90), ("b", 2., .4, .95), ("c", 3., .3, .93)]]
  whole, payload = plots._draw_front(Figure().add_subplot(), models)
  # c is dominated counting whole files (b is cheaper and better), not
  # counting payloads (c is cheaper than b there).
  assert list(whole.get_xdata()) == [1., 2.]
  assert list(payload.get_xdata()) == [.2, .3, .4]
  assert list(payload.get_ydata()) == [90., 93., 95.]
  assert whole.get_label() == "models' Pareto front, whole file"


def test_mutated_baselines_tables_load_or_fail_in_one_line(tmp_path):
  """Bit flips, truncations, splices and garbage of a real baselines table,
  and rows cut short: each loads or is refused with a one-line UserError."""
  table = Path(write_baselines(tmp_path / "baselines_mnist.csv")).read_bytes()
  short = table.rstrip(b"\n").rsplit(b"\n", 1)[0] + b"\njpeg\n"
  names_last = (b"bytes_per_image,payload_bytes_per_image,bpp,payload_bpp,"
                b"quality,codec\n1,1,1,1\n")
  mutations = hostile.raw_mutations(np.random.default_rng(3), [table], 300)
  cases = [short, names_last] + mutations
  path = tmp_path / "mutated" / "baselines_mnist.csv"
  path.parent.mkdir()

  def load(data):
    path.write_bytes(data)
    return points_lib.load_baselines(str(path))

  outcomes, _ = hostile.fuzz(load, cases, base_seconds=1.)
  assert outcomes["refused"] > 50 and outcomes["decoded"] > 0, outcomes


def test_a_jpeg_copy_is_named_in_the_titles_and_the_points(tmp_path,
                                                           monkeypatch):
  """Figures from a JPEG copy of a dataset say so: the source its
  eval.json or its baselines table records."""
  run = write_run(tmp_path / "runs" / "joint", "cifar10", .7, .7, 90., None)
  with open(os.path.join(run, "eval.json")) as f:
    results = json.load(f)
  results["data_source"] = "cifar10-jpeg-q75:/data/cifar10_jpeg"
  with open(os.path.join(run, "eval.json"), "w") as f:
    json.dump(results, f)
  points = points_lib.load_runs([run])
  assert points_lib.dataset_title("cifar10", [p.source for p in points]) == (
      "cifar10, JPEG q75 copy")
  assert points_lib.dataset_title("cifar10", ["tfds:cifar10", None]) == (
      "cifar10")
  figures = _figures(monkeypatch)
  report.write_report(points, {}, str(tmp_path / "out"),
                      note=lambda line: None)
  title = figures["accuracy_cifar10.png"]._suptitle.get_text()
  assert title.startswith("cifar10, JPEG q75 copy: test accuracy")
  with open(tmp_path / "out" / "points.csv", newline="") as f:
    assert [row["source"] for row in csv.DictReader(f)] == [
        "cifar10-jpeg-q75:/data/cifar10_jpeg"]


def test_two_frontiers_points_of_one_name_are_told_apart(tmp_path):
  for frontier in ("joint_5kb", "joint_20kb"):
    write_run(tmp_path / frontier / "latent32_lmbda1", "cifar10", .6, .3,
              30., None)
  write_run(tmp_path / "joint_20kb" / "latent32_lmbda5", "cifar10", .5, .1,
            10., None)
  names = sorted(p.name for p in points_lib.load_runs(
      [str(tmp_path / "joint_5kb"), str(tmp_path / "joint_20kb")]))
  assert names == ["joint_20kb/latent32_lmbda1", "joint_5kb/latent32_lmbda1",
                   "latent32_lmbda5"]


@pytest.mark.parametrize("count, below", [(3, False), (14, True)])
def test_a_long_legend_goes_under_the_plot(count, below, tmp_path,
                                           monkeypatch):
  points = [points_lib.Point("mnist", "model", f"m{i}", "joint", .1 * (i + 1),
                             .1 * (i + 1), 10. * (i + 1), 10. * (i + 1),
                             accuracy=.9) for i in range(count)]
  figures = _figures(monkeypatch)
  report.write_report(points, {}, str(tmp_path), note=lambda line: None)
  figure = figures["accuracy_mnist.png"]
  assert bool(figure.legends) == below
  assert (figure.axes[0].get_legend() is None) == below
  assert (figure.get_size_inches()[1] > 5.6) == below


@pytest.mark.parametrize("source", [7, ["cifar10-jpeg-q75:/x"], {"a": 1}])
def test_a_data_source_that_is_not_text_is_ignored(source, tmp_path):
  """eval.json is a file a hand may edit: a data_source of another type
  names no copy, rather than raising a traceback."""
  run = write_run(tmp_path / "runs" / "joint", "cifar10", .7, .7, 90., None)
  with open(os.path.join(run, "eval.json")) as f:
    results = json.load(f)
  results["data_source"] = source
  with open(os.path.join(run, "eval.json"), "w") as f:
    json.dump(results, f)
  (point,) = points_lib.load_runs([run])
  assert point.source is None
  report.write_report([point], {}, str(tmp_path / "out"),
                      note=lambda line: None)
  assert os.path.exists(tmp_path / "out" / "accuracy_cifar10.png")
