"""Rate-accuracy report: trained models against the classical codecs.

    python -m tfvaeclf.experiments.report --runs=runs \
        --baselines=runs/baselines_mnist.csv --reference=mnist:0.992 \
        --out=report

Reads evaluated model dirs (`config.json` and `eval.json`; a parent dir such
as `runs/` stands for every model dir in it) and the rate tables written by
`tools/baselines.py`. Writes into `--out`:

* `points.csv` and `points.json`: one row per point (a model, or a codec at
  one quality) with its dataset, rates both ways, accuracy and PSNR;
* `accuracy_<dataset>.png`: test accuracy against bits per pixel;
* `psnr_<dataset>.png`: PSNR against bits per pixel, where PSNR exists;
* `summary.md`: per dataset, the rate each codec needs to match the best
  model's accuracy and, where models have PSNR, each codec's PSNR at each
  model's rate (also printed); with `--budgets=5KB,20KB,80KB`, a table per
  edge budget (`tfvaeclf.experiments.budgets`): the models whose int8
  edge fits it, its send-the-class classifier and the codecs.

A model dir's board.json (`python -m tfvaeclf.experiments.board`) puts its
edge budget in the plot's legend and the tables; a classifier's is the
send-the-class point, drawn beside the models.

How rates are counted. A codec is counted two ways (see tfvaeclf/baselines.py):
the whole file, and the entropy-coded payload alone. So is a model: its
payload is the range-coded strings (`bytes_per_image` of eval.json), its
whole the bytes a sender transmits for one image: a one-image message
(`message_bytes_per_image`: the strings plus the message header; see
tfvaeclf/bitstream.py). An eval.json written before messages existed gives
its one-image file (`file_bytes_per_image`), one older still its payload.

Accuracies are fractions in the files and percentages in the plots. The
`accuracy` (and `finetuned_accuracy`) columns of a baselines CSV are
optional: without them the codecs get rate-only rows and no accuracy curve.
A CSV's dataset comes from its `dataset` column, else from the
`DATASET:PATH.csv` form of `--baselines`, else from a file name
`baselines_<dataset>.csv`.
"""

from tfvaeclf import cli  # first: one-line errors, exit code 2

import csv
import dataclasses
import math
import os
import re
import sys

from absl import flags

from tfvaeclf import fileio
from tfvaeclf.experiments import budgets as budgets_lib, plots
from tfvaeclf.experiments.points import (BOARD, accuracy_kinds, codec_sweeps,
                                         dataset_title, load_baselines,
                                         load_runs)

__all__ = ["parse_references",
           "matched_rate", "psnr_at_rate", "best_model", "summary_markdown",
           "psnr_markdown", "write_report"]

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", [], "Model dirs, or dirs of model dirs (runs/).")
flags.DEFINE_multi_string(
    "reference", [], "DATASET:ACCURACY of the uncompressed classifier, as a "
    "fraction (0.992) or a percentage (99.2%); repeatable or a list.")

KINDS = ("model", BOARD, "codec")
FIELDS = ("dataset", "kind", "name", "setting", "bpp", "payload_bpp",
          "bytes_per_image", "payload_bytes_per_image", "accuracy",
          "finetuned_accuracy", "psnr", "edge_int8_bytes", "edge_macs",
          "edge_arena_bytes", "board_model_bytes", "board_accuracy",
          "source")
# The two ways of counting a rate in bytes per image (the plots count bits
# per pixel the same two ways, `plots.COUNTINGS`): the field holding it, and
# its label.
BYTE_COUNTINGS = (("bytes_per_image", "whole file"),
                  ("payload_bytes_per_image", "payload only"))


# --- reading ----------------------------------------------------------------


def parse_references(values):
  """["mnist:0.992", "cifar10:91%,..."] -> {dataset: accuracy fraction}."""
  references = {}
  for item in (v.strip() for value in values for v in value.split(",")):
    if not item:
      continue
    dataset, _, accuracy = item.rpartition(":")
    percent = accuracy.endswith("%")
    try:
      fraction = float(accuracy.rstrip("%")) / (100. if percent else 1.)
    except ValueError:
      fraction = None
    if not dataset or fraction is None or not 0. < fraction <= 1.:
      raise cli.UserError(
          f"--reference={item}: expected DATASET:ACCURACY, the accuracy a "
          "fraction (0.992) or a percentage (99.2%)")
    references[dataset] = fraction
  return references


# --- matched rate -----------------------------------------------------------


def best_model(points):
  """The most accurate model point (the cheaper one on a tie), or None."""
  models = [p for p in points if p.kind == "model" and p.accuracy is not None]
  return min(models, key=lambda p: (-p.accuracy, p.bpp), default=None)


def matched_rate(sweep, target, rate="bpp", accuracy="accuracy"):
  """The smallest rate at which a codec's quality sweep reaches `target`.

  `sweep` is one codec's points in the order of its quality sweep. Between
  two neighbouring qualities the accuracy is interpolated linearly against
  log rate, the straight segment the log-scale plot draws; the sweep is not
  extrapolated beyond its ends. Returns None if it never reaches `target`.
  """
  curve = [(getattr(p, rate), getattr(p, accuracy)) for p in sweep
           if getattr(p, accuracy) is not None]
  reached = [r for r, a in curve if a >= target]
  for (r0, a0), (r1, a1) in zip(curve, curve[1:]):
    if min(a0, a1) < target <= max(a0, a1):
      t = (target - a0) / (a1 - a0)
      reached.append(math.exp(math.log(r0) + t * (math.log(r1) -
                                                   math.log(r0))))
  return min(reached, default=None)


def psnr_at_rate(sweep, size, rate="payload_bytes_per_image"):
  """A codec's PSNR at rate `size`, interpolated linearly against log rate
  between the two qualities around it (as the plot draws it); None outside
  the sweep's rates, which are not extrapolated."""
  curve = sorted((getattr(p, rate), p.psnr) for p in sweep
                 if p.psnr is not None)
  for (r0, q0), (r1, q1) in zip(curve, curve[1:]):
    if r0 <= size <= r1:
      t = (math.log(size) - math.log(r0)) / (math.log(r1) - math.log(r0)) if (
          r1 > r0) else 0.
      return q0 + t * (q1 - q0)
  return None


def _table(header, rows):
  """A Markdown table's lines."""
  return ["| " + " | ".join(row) + " |"
          for row in [header, ["---"] * len(header), *rows]]


def _matched_cells(sweep, model, value, missing):
  """(bytes/image, x model) for each of BYTE_COUNTINGS: where the codec's
  `sweep` first reaches `model`'s accuracy (or PSNR: `value` names the
  field, the model's own accuracy is matched for `finetuned_accuracy`);
  `missing` when the sweep measured no such value."""
  target = model.psnr if value == "psnr" else model.accuracy
  measured = [p for p in sweep if getattr(p, value) is not None]
  cells = []
  for rate, _ in BYTE_COUNTINGS:
    size = matched_rate(sweep, target, rate, value)
    if size is None:
      cells += ["not reached" if measured else missing, "–"]
      continue
    # Reached at the sweep's lowest quality: a lower one might too.
    bound = "≤ " if getattr(measured[0], value) >= target else ""
    model_size = getattr(model, rate)
    cells += [f"{bound}{size:.3g}", f"{bound}{size / model_size:.1f}x"
              if model_size > 0 else "–"]
  return cells


def summary_markdown(dataset, points):
  """The matched-rate table of one dataset's points, as Markdown."""
  best = best_model(points)
  lines = [f"### {dataset}", ""]
  sweeps = codec_sweeps(points)
  if best is None:
    return "\n".join(lines + ["No evaluated model: nothing to match.", ""])
  lines += [f"Best model: {best.name} ({best.setting}), "
            f"{100 * best.accuracy:.2f}% test accuracy at "
            f"{best.payload_bytes_per_image:.2f} bytes/image payload "
            f"({best.payload_bpp:.4g} bpp), {best.bytes_per_image:.2f} as a "
            f"one-image message ({best.bpp:.4g} bpp).", ""]
  if not sweeps:
    return "\n".join(lines + ["No codec baselines for this dataset.", ""])
  if not any(p.accuracy is not None for p in points if p.kind == "codec"):
    return "\n".join(lines + [
        "The codec baselines have no accuracy column: rates only, no "
        "matched-rate comparison.", ""])
  kinds = accuracy_kinds(points)
  target = f"{100 * best.accuracy:.2f}%"
  header = ["codec"] + (["classifier"] if len(kinds) > 1 else [])
  for _, counting in BYTE_COUNTINGS:
    header += [f"bytes/image to reach {target} ({counting})", "x model"]
  lines += _table(header, [
      [name] + ([classifier] if len(kinds) > 1 else [])
      + _matched_cells(sweep, best, accuracy, "no accuracy")
      for name, sweep in sweeps.items() for accuracy, classifier in kinds])
  lines += ["", "A codec's rate is interpolated along its quality sweep "
            "(accuracy linear in log rate) and divided by the model's rate "
            "counted the same way: whole file against a one-image tfvaeclf "
            "message, payload against the range-coded bytes. ≤: reached "
            "already at the sweep's lowest quality, so a lower quality may "
            "reach it too.", ""]
  return "\n".join(lines)


def psnr_markdown(dataset, points):
  """Each model's PSNR beside each codec's at the model's rate, both ways
  of counting (payload against payload, message against whole file), as
  Markdown; "" where no model has a PSNR."""
  models = sorted((p for p in points if p.kind == "model"
                   and p.psnr is not None),
                  key=lambda p: p.payload_bytes_per_image)
  sweeps = {name: sweep for name, sweep in codec_sweeps(points).items()
            if any(p.psnr is not None for p in sweep)}
  if not models or not sweeps:
    return ""
  lines = [f"### {dataset}: PSNR at the models' rates", ""]
  for rate, counting in reversed(BYTE_COUNTINGS):
    header = ["model", f"bytes/image ({counting})", "PSNR (dB)"]
    header += [f"{name} (dB, model minus it)" for name in sweeps]
    rows = []
    for model in models:
      size = getattr(model, rate)
      rows.append([f"{model.name} ({model.setting})", f"{size:.3g}",
                   f"{model.psnr:.2f}"])
      for sweep in sweeps.values():
        psnr = psnr_at_rate(sweep, size, rate)
        rows[-1].append("outside its rates" if psnr is None else
                        f"{psnr:.2f} ({model.psnr - psnr:+.2f})")
    lines += _table(header, rows) + [""]
  header = ["model", "PSNR (dB)"] + [
      f"{name}: bytes/image to reach it ({counting}), x model"
      for name in sweeps for _, counting in BYTE_COUNTINGS]
  rows = []
  for model in models:
    rows.append([f"{model.name} ({model.setting})", f"{model.psnr:.2f}"])
    for sweep in sweeps.values():
      size, ratio, payload, payload_ratio = _matched_cells(
          sweep, model, "psnr", "no PSNR")
      rows[-1] += [f"{size} ({ratio})", f"{payload} ({payload_ratio})"]
  lines += _table(header, rows)
  lines += ["", "A codec's PSNR is interpolated along its quality sweep "
            "(PSNR linear in log rate), never extrapolated: payload against "
            "the model's range-coded bytes, whole file against its one-image "
            "message. The last table is the other way round: the rate at "
            "which a codec first reaches the model's PSNR (≤: already at its "
            "lowest quality).", ""]
  return "\n".join(lines)


# --- writing ----------------------------------------------------------------


def _file_name(dataset):
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset).strip("_") or "dataset"


def write_points(points, out):
  rows = [dataclasses.asdict(p) for p in points]
  with fileio.atomic_writer(os.path.join(out, "points.csv"), "w") as f:
    writer = csv.DictWriter(f, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()}
                     for row in rows)
  fileio.write_json(os.path.join(out, "points.json"), rows)


def _by_dataset(points):
  order = {kind: i for i, kind in enumerate(KINDS)}
  datasets = {}
  for p in sorted(points, key=lambda p: (p.dataset, order[p.kind])):
    datasets.setdefault(p.dataset, []).append(p)  # stable: sweeps stay put
  return datasets


def write_report(points, references, out, note=None, budgets=()):
  """Writes points, plots and summary into `out` (a table per edge budget
  of `budgets`, in bytes); returns the summary."""
  note = note or (lambda line: print(line, file=sys.stderr))
  datasets = _by_dataset(points)
  for dataset in sorted(set(references) - set(datasets)):
    note(f"--reference for {dataset}: no points of that dataset")
  write_points([p for ps in datasets.values() for p in ps], out)
  colors = plots.codec_colors(points)
  markers = plots.model_markers(points)
  summaries = []
  for dataset, ds_points in datasets.items():
    if not any(p.kind == "model" for p in ds_points):
      note(f"{dataset}: codec baselines but no evaluated model")
    name = _file_name(dataset)
    title = dataset_title(dataset, [p.source for p in ds_points])
    if any(p.accuracy is not None for p in ds_points):
      plots.accuracy_vs_rate(title, ds_points, references.get(dataset),
                             colors, markers,
                             os.path.join(out, f"accuracy_{name}.png"))
    if any(p.psnr is not None for p in ds_points):
      plots.psnr_vs_rate(title, ds_points, colors, markers,
                         os.path.join(out, f"psnr_{name}.png"))
    summaries.append(summary_markdown(dataset, ds_points))
    summaries.append(psnr_markdown(dataset, ds_points))
    if budgets:
      summaries.append(budgets_lib.budget_markdown(dataset, ds_points,
                                                   budgets))
  summary = "## Rate needed to match the best model's accuracy\n\n" + (
      "\n".join(s for s in summaries if s))
  with fileio.atomic_writer(os.path.join(out, "summary.md"), "w") as f:
    f.write(summary)
  return summary


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not (FLAGS.runs or FLAGS.baselines):
    raise cli.UserError(
        "nothing to read: give --runs=DIR[,DIR...] (evaluated model dirs) "
        "and/or --baselines=[DATASET:]CSV[,...] (tools/baselines.py tables)")
  if not FLAGS.out:
    raise cli.UserError(
        "--out is required: the dir to write the points, plots and summary "
        "into (e.g. --out=report)")
  references = parse_references(FLAGS.reference)
  budgets = budgets_lib.parse_budgets(FLAGS.budgets)
  points = []
  # An evaluated uncompressed classifier (--model=classifier) is the
  # reference line of its dataset, unless --reference says otherwise.
  for point in load_runs(FLAGS.runs):
    if point.kind == "uncompressed":
      references.setdefault(point.dataset, point.accuracy)
    else:
      points.append(point)
  for spec in FLAGS.baselines:
    points += load_baselines(spec)
  if not points:
    raise cli.UserError("nothing to report: no evaluated model dir and no "
                        "baseline rows")
  print(write_report(points, references, FLAGS.out, budgets=budgets))
  print(f"wrote {FLAGS.out}: points.csv, points.json, summary.md and plots",
        file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
