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
  model's rate (also printed).

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
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from matplotlib.lines import Line2D
from matplotlib.text import Annotation

from tfvaeclf import fileio
from tfvaeclf.experiments.pareto import pareto_front
from tfvaeclf.experiments.points import load_baselines, load_runs

__all__ = ["parse_references",
           "matched_rate", "psnr_at_rate", "best_model", "summary_markdown",
           "psnr_markdown", "write_report"]

FLAGS = flags.FLAGS
flags.DEFINE_list("runs", [], "Model dirs, or dirs of model dirs (runs/).")
flags.DEFINE_multi_string(
    "reference", [], "DATASET:ACCURACY of the uncompressed classifier, as a "
    "fraction (0.992) or a percentage (99.2%); repeatable or a list.")

KINDS = ("model", "codec")
FIELDS = ("dataset", "kind", "name", "setting", "bpp", "payload_bpp",
          "bytes_per_image", "payload_bytes_per_image", "accuracy",
          "finetuned_accuracy", "psnr")
# The two ways of counting a rate, as the field holding it and a label: in
# bits per pixel (the plots) and in bytes per image (the summary).
COUNTINGS = (("bpp", "whole file"), ("payload_bpp", "payload only"))
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


def _codec_sweeps(points):
  """{codec name: its points in sweep order} for one dataset's points."""
  sweeps = {}
  for p in points:
    if p.kind == "codec":
      sweeps.setdefault(p.name, []).append(p)
  return sweeps


def _accuracy_kinds(points):
  kinds = [("accuracy", "as trained")]
  if any(p.finetuned_accuracy is not None for p in points):
    kinds.append(("finetuned_accuracy", "fine-tuned on decoded images"))
  return kinds


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
  sweeps = _codec_sweeps(points)
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
  kinds = _accuracy_kinds(points)
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
  sweeps = {name: sweep for name, sweep in _codec_sweeps(points).items()
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


# --- plots ------------------------------------------------------------------

_MODEL_MARKERS = ("*", "D", "P", "X", "s", "^", "v", "p")


def _model_markers(points):
  """{model name: marker}, the same in every plot of a report."""
  names = sorted({p.name for p in points if p.kind == "model"})
  return {name: _MODEL_MARKERS[i % len(_MODEL_MARKERS)]
          for i, name in enumerate(names)}


def _codec_colors(points):
  names = sorted({p.name for p in points if p.kind == "codec"})
  palette = [f"C{i}" for i in range(10)]
  return {name: palette[i % 10] for i, name in enumerate(names)}


def _new_axes(title, ylabel):
  figure = Figure(figsize=(10, 5.6), dpi=110, layout="constrained")
  axes = figure.add_subplot()
  axes.set_xscale("log")
  axes.margins(x=0.08, y=0.08)
  axes.set_xlabel("bits per pixel (log scale)")
  axes.set_ylabel(ylabel)
  figure.suptitle(title)  # over the legend too: long titles fit
  axes.grid(True, which="major", alpha=0.4)
  axes.grid(True, which="minor", alpha=0.15)
  return figure, axes


def _bytes_axis(axes, points):
  """A top axis in bytes per image beside the bottom's bits per pixel (the
  images of one dataset are all of one size)."""
  pixels = next((8 * p.bytes_per_image / p.bpp for p in points if p.bpp),
                None)
  if pixels:
    top = axes.secondary_xaxis("top", functions=(
        lambda bpp: bpp * pixels / 8, lambda size: size * 8 / pixels))
    top.xaxis.set_major_locator(ticker.LogLocator(subs=(1., 2., 5.)))
    top.xaxis.set_major_formatter(ticker.FuncFormatter(
        lambda size, _: f"{size:g}"))
    top.xaxis.set_minor_formatter(ticker.NullFormatter())
    top.set_xlabel("bytes per image")


def _draw_models(axes, models, value, markers):
  """Each model filled at its whole-file rate, hollow at its payload rate,
  joined by a thin line, as the codecs' solid and dashed curves are; its
  name beside it where there is room (see `_place_labels`)."""
  handles = []
  for p in models:
    marker = markers[p.name]
    size = 11 if marker == "*" else 8
    (handle,) = axes.plot([p.bpp], [value(p)], marker=marker, color="black",
                          markersize=size, linestyle="none",
                          label=f"{p.name} ({p.setting})")
    if p.payload_bpp != p.bpp:
      axes.plot([p.payload_bpp, p.bpp], [value(p)] * 2, color="black",
                linewidth=0.6, linestyle=":")
      axes.plot([p.payload_bpp], [value(p)], marker=marker, color="black",
                markerfacecolor="none", markersize=size, linestyle="none")
    axes.annotate(p.name, (p.payload_bpp, value(p)),
                  textcoords="offset points", xytext=_LABEL_OFFSETS[0],
                  fontsize=9)
    handles.append(handle)
  if any(p.payload_bpp != p.bpp for p in models):
    handles += [Line2D([], [], color="black", marker="o", linestyle="none",
                       markerfacecolor=face, label=f"model, {counting}")
                for face, counting in (("black", "one-image message"),
                                       ("none", "payload only"))]
  return handles


def _draw_codecs(axes, points, colors, scale, kinds):
  """Codec curves; returns the legend handles that explain them."""
  drawn = set()
  for name, sweep in _codec_sweeps(points).items():
    for field, marker in zip((k for k, _ in kinds), ("o", "^")):
      for (rate, _), style in zip(COUNTINGS, ("-", "--")):
        curve = [(getattr(p, rate), scale * getattr(p, field)) for p in sweep
                 if getattr(p, field) is not None]
        if not curve:
          continue
        xs, ys = zip(*curve)
        axes.plot(xs, ys, linestyle=style, marker=marker, markersize=4,
                  color=colors[name], alpha=0.9 if style == "-" else 0.7)
        drawn.add((name, field, rate))
  names = sorted({name for name, _, _ in drawn})
  handles = [Line2D([], [], color=colors[n], linewidth=3, label=n)
             for n in names]
  if drawn:
    handles += [Line2D([], [], color="gray", linestyle=style,
                       label=f"codec, {counting}")
                for (rate, counting), style in zip(COUNTINGS, ("-", "--"))
                if any(r == rate for _, _, r in drawn)]
  if len({field for _, field, _ in drawn}) > 1:
    handles += [Line2D([], [], color="gray", marker=marker,
                       linestyle="none", label=f"codec, classifier {label}")
                for (_, label), marker in zip(kinds, ("o", "^"))]
  return handles


def _draw_front(axes, models):
  """The models' Pareto front of accuracy against each counting of the
  rate, as a step line through the points drawn for that counting."""
  handles = []
  for (rate, counting), style in zip(COUNTINGS, ("-", ":")):
    pairs = [(getattr(p, rate), 100 * p.accuracy) for p in models]
    front = sorted(pair for pair, on in zip(pairs, pareto_front(pairs)) if on)
    if len(front) < 2:
      continue
    xs, ys = zip(*front)
    handles += axes.step(xs, ys, where="post", color="black", linewidth=1,
                         linestyle=style,
                         label=f"models' Pareto front, {counting}")
  return handles


# Where a model's name may go, in points from its payload marker: right
# above, right below, left above, left below.
_LABEL_OFFSETS = ((7, 6), (7, -12), (-7, 6), (-7, -12))


def _marker_boxes(axes, renderer):
  """The display boxes of the markers drawn in `axes`."""
  half = renderer.points_to_pixels(5)
  points = [axes.transData.transform(xy) for line in axes.get_lines()
            if line.get_marker() not in ("None", "", None)
            for xy in line.get_xydata()]
  return [Bbox.from_extents(x - half, y - half, x + half, y + half)
          for x, y in points]


def _place_labels(figure):
  """Moves each model's name to the first of `_LABEL_OFFSETS` where it
  covers no marker and no name placed before it, inside the axes; a name
  with no such place is left out (the legend still names its marker)."""
  renderer = FigureCanvasAgg(figure).get_renderer()
  figure.draw_without_rendering()  # the constrained layout, final limits
  figure.set_layout_engine("none")  # kept as placed: names move with it
  for axes in figure.axes:
    taken = _marker_boxes(axes, renderer)
    inside = axes.get_window_extent(renderer)
    for label in axes.texts:
      if not isinstance(label, Annotation):  # a note, not a name
        continue
      for dx, dy in _LABEL_OFFSETS:
        label.set_horizontalalignment("left" if dx > 0 else "right")
        label.xyann = (dx, dy)
        box = label.get_window_extent(renderer)
        fits = (inside.contains(box.x0, box.y0)
                and inside.contains(box.x1, box.y1))
        if fits and not any(box.overlaps(other) for other in taken):
          taken.append(box)
          break
      else:
        label.set_visible(False)


def _save(figure, path):
  for axes in figure.axes:  # at least a decade of rate, ticks at 1, 2, 5
    low, high = axes.get_xlim()
    if high < 10 * low:
      middle = math.sqrt(low * high)
      axes.set_xlim(middle / math.sqrt(10), middle * math.sqrt(10))
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1., 2., 5.)))
    axes.xaxis.set_major_formatter(
        ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
  _place_labels(figure)
  with fileio.atomic_writer(path, "wb") as f:
    figure.savefig(f, format="png")


def plot_accuracy(dataset, points, reference, colors, markers, path):
  figure, axes = _new_axes(
      f"{dataset}: test accuracy against rate, learned models and classical "
      "codecs", "test accuracy (%)")
  models = [p for p in points if p.kind == "model"]
  _bytes_axis(axes, points)
  handles = _draw_models(axes, models, lambda p: 100 * p.accuracy, markers)
  handles += _draw_front(axes, models)
  handles += _draw_codecs(axes, points, colors, 100,
                          _accuracy_kinds(points))
  if reference is not None:
    handles.append(axes.axhline(
        100 * reference, color="dimgray", linestyle=":", linewidth=1.5,
        label=f"uncompressed classifier ({100 * reference:.2f}%)"))
  if any(p.kind == "codec" for p in points) and not any(
      p.accuracy is not None for p in points if p.kind == "codec"):
    axes.text(0.99, 0.02, "codec baselines: no accuracy measured "
              "(rates only, in points.csv)", transform=axes.transAxes,
              ha="right", va="bottom", fontsize=9, color="dimgray")
  low, high = axes.get_ylim()
  axes.set_ylim(low, min(high, 100.5))  # no room above 100%
  axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=9, title="black: learned models", title_fontsize=9)
  _save(figure, path)


def plot_psnr(dataset, points, colors, markers, path):
  figure, axes = _new_axes(
      f"{dataset}: reconstruction PSNR against rate", "PSNR (dB)")
  models = [p for p in points if p.kind == "model" and p.psnr is not None]
  _bytes_axis(axes, points)
  handles = _draw_models(axes, models, lambda p: p.psnr, markers)
  handles += _draw_codecs(axes, points, colors, 1., [("psnr", "")])
  if not models:
    axes.text(0.99, 0.02, "no learned model here has a decoder: "
              "no model PSNR", transform=axes.transAxes, ha="right",
              va="bottom", fontsize=9, color="dimgray")
  axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=9)
  _save(figure, path)


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


def write_report(points, references, out, note=None):
  """Writes points, plots and summary into `out`; returns the summary."""
  note = note or (lambda line: print(line, file=sys.stderr))
  datasets = _by_dataset(points)
  for dataset in sorted(set(references) - set(datasets)):
    note(f"--reference for {dataset}: no points of that dataset")
  write_points([p for ps in datasets.values() for p in ps], out)
  colors, markers = _codec_colors(points), _model_markers(points)
  summaries = []
  for dataset, ds_points in datasets.items():
    if not any(p.kind == "model" for p in ds_points):
      note(f"{dataset}: codec baselines but no evaluated model")
    name = _file_name(dataset)
    if any(p.accuracy is not None for p in ds_points):
      plot_accuracy(dataset, ds_points, references.get(dataset), colors,
                    markers, os.path.join(out, f"accuracy_{name}.png"))
    if any(p.psnr is not None for p in ds_points):
      plot_psnr(dataset, ds_points, colors, markers,
                os.path.join(out, f"psnr_{name}.png"))
    summaries.append(summary_markdown(dataset, ds_points))
    summaries.append(psnr_markdown(dataset, ds_points))
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
  print(write_report(points, references, FLAGS.out))
  print(f"wrote {FLAGS.out}: points.csv, points.json, summary.md and plots",
        file=sys.stderr)


if __name__ == "__main__":
  cli.run(main)
