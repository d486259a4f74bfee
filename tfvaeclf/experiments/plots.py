"""The one module that draws: every figure the experiments write.

An experiment computes its points (`points.Point`s, or the rows of its
points.csv) and calls one function here per figure:

    accuracy_vs_rate, psnr_vs_rate   the report: learned models against the
                                     codecs' quality sweeps, bits per pixel
    frontier                         the rate frontier: every point and the
                                     Pareto front, a panel per rate
    rdc_curves, rdc_gaps             rate-distortion-classification curves,
                                     and what reusing one encoder costs
    accuracy_vs_bytes                a split kind's curves beside the
                                     trivial extremes and the uncut network

What they share is here once: the figure (`new_figure`), the Pareto front's
step line and the writing of the PNG (`save`). matplotlib's object API
only, never pyplot (no global figures, no display backend), and no
TensorFlow: the report draws without it.
"""

import math

import matplotlib
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

from tfvaeclf import fileio
from tfvaeclf.experiments.budgets import budget_label
from tfvaeclf.experiments.pareto import pareto_front
from tfvaeclf.experiments.points import BOARD, accuracy_kinds, codec_sweeps

__all__ = ["COUNTINGS", "new_figure", "save", "model_markers",
           "codec_colors", "accuracy_vs_rate", "psnr_vs_rate", "frontier",
           "rdc_curves", "rdc_gaps", "accuracy_vs_bytes"]

# The two ways of counting a point's rate in bits per pixel: the field
# holding it, and its label.
COUNTINGS = (("bpp", "whole file"), ("payload_bpp", "payload only"))


# --- shared -----------------------------------------------------------------


def new_figure(size, *, dpi=110, layout="constrained"):
  """A figure of `size` inches, laid out by `layout` (None: by the caller)."""
  return Figure(figsize=size, dpi=dpi, layout=layout)


def save(figure, path, dpi=None):
  """Writes `figure` to `path` as a PNG, whole or not at all; `dpi`
  (default: the figure's) sets its resolution."""
  with fileio.atomic_writer(path, "wb") as f:
    figure.savefig(f, format="png", dpi=dpi)


def _step_front(axes, front, label, linestyle="-"):
  """Draws the (rate, accuracy) pairs `front` as a Pareto front: a step
  line in rate order. Returns its handles."""
  front = sorted(front)
  return axes.step([rate for rate, _ in front],
                   [accuracy for _, accuracy in front], where="post",
                   color="black", linewidth=1, linestyle=linestyle,
                   label=label)


# --- the report: models against the codecs, per bits per pixel -------------

_MODEL_MARKERS = ("*", "D", "P", "X", "s", "^", "v", "p")


def model_markers(points):
  """{model name: marker}, the same in every plot of a report."""
  names = sorted({p.name for p in points if p.kind == "model"})
  return {name: _MODEL_MARKERS[i % len(_MODEL_MARKERS)]
          for i, name in enumerate(names)}


def codec_colors(points):
  """{codec name: colour}, the same in every plot of a report."""
  names = sorted({p.name for p in points if p.kind == "codec"})
  palette = [f"C{i}" for i in range(10)]
  return {name: palette[i % 10] for i, name in enumerate(names)}


def _rate_axes(title, ylabel):
  figure = new_figure((10, 5.6))
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


def _legend_label(label, point):
  """`label`, then the point's edge budget where it was measured."""
  budget = budget_label(point.edge_int8_bytes, point.edge_macs,
                        point.board_model_bytes)
  return label if budget is None else f"{label} · {budget}"


def _draw_models(axes, models, value, markers):
  """Each model filled at its whole-file rate, hollow at its payload rate,
  joined by a thin line, as the codecs' solid and dashed curves are; its
  name beside it where there is room (see `_place_labels`), its edge
  budget in the legend."""
  handles = []
  for p in models:
    marker = markers[p.name]
    size = 11 if marker == "*" else 8
    (handle,) = axes.plot([p.bpp], [value(p)], marker=marker, color="black",
                          markersize=size, linestyle="none",
                          label=_legend_label(f"{p.name} ({p.setting})", p))
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


def _draw_on_board(axes, points):
  """The send-the-class points (a classifier run whole on the board), grey
  triangles at their class bits, the budget in the legend."""
  return [axes.plot([p.bpp], [100 * p.accuracy], marker="v",
                    color="dimgray", markersize=9, linestyle="none",
                    label=_legend_label(f"send the class: {p.name}", p))[0]
          for p in points if p.kind == BOARD]


def _draw_codecs(axes, points, colors, scale, kinds):
  """Codec curves; returns the legend handles that explain them."""
  drawn = set()
  for name, sweep in codec_sweeps(points).items():
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
    front = [pair for pair, on in zip(pairs, pareto_front(pairs)) if on]
    if len(front) < 2:
      continue
    handles += _step_front(axes, front, f"models' Pareto front, {counting}",
                           style)
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


def _save_rate_figure(figure, path):
  """Log rate axes of at least a decade, ticks at 1, 2 and 5; the models'
  names placed; then `save`."""
  for axes in figure.axes:
    low, high = axes.get_xlim()
    if high < 10 * low:
      middle = math.sqrt(low * high)
      axes.set_xlim(middle / math.sqrt(10), middle * math.sqrt(10))
    axes.xaxis.set_major_locator(ticker.LogLocator(subs=(1., 2., 5.)))
    axes.xaxis.set_major_formatter(
        ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
  _place_labels(figure)
  save(figure, path)


def accuracy_vs_rate(dataset, points, reference, colors, markers, path):
  """One dataset's test accuracy against bits per pixel: its models (with
  their Pareto front), the classifiers on the board that send the class,
  the codecs' sweeps and, if given, the `reference` accuracy of the
  uncompressed classifier; written to `path`. `dataset` is the name the
  title gives it (`points.dataset_title`)."""
  figure, axes = _rate_axes(
      f"{dataset}: test accuracy against rate, learned models and classical "
      "codecs", "test accuracy (%)")
  models = [p for p in points if p.kind == "model"]
  _bytes_axis(axes, points)
  handles = _draw_models(axes, models, lambda p: 100 * p.accuracy, markers)
  handles += _draw_front(axes, models)
  handles += _draw_on_board(axes, points)
  handles += _draw_codecs(axes, points, colors, 100, accuracy_kinds(points))
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
  _legend(figure, axes, handles)
  _save_rate_figure(figure, path)


# Above this many entries the legend goes under the plot, in two columns:
# beside it, a long legend leaves the plot a sliver.
_LEGEND_BESIDE = 12


def _legend(figure, axes, handles):
  options = dict(handles=handles, fontsize=9, title="black: learned models",
                 title_fontsize=9)
  if len(handles) <= _LEGEND_BESIDE:
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), **options)
    return
  width, height = figure.get_size_inches()
  figure.set_size_inches(width + 2, height + 0.12 * len(handles))
  figure.legend(loc="outside lower center", ncols=2, **options)


def psnr_vs_rate(dataset, points, colors, markers, path):
  """One dataset's reconstruction PSNR against bits per pixel: the models
  that have one and the codecs' sweeps; written to `path`."""
  figure, axes = _rate_axes(
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
  _save_rate_figure(figure, path)


# --- the rate frontier --------------------------------------------------------


def frontier(rows, rates, title, path, on_board=()):
  """Accuracy against each of `rates` ((row field, axis label) pairs), a
  panel each: every point, coloured by its latent size (its edge budget,
  where the rows have board.json's figures, in the legend), the Pareto
  front (the rows whose `front_<field>` is set) as a step line, each of
  its points labelled with its λ, and the send-the-class points
  `on_board` (`points.Point`s of kind BOARD) at their class bits."""
  figure = new_figure((11, 4.6))
  sizes = sorted({row["latent_channels"] for row in rows})
  for i, (rate, label) in enumerate(rates):
    axes = figure.add_subplot(1, len(rates), i + 1)
    for size in sizes:
      points = [row for row in rows if row["latent_channels"] == size]
      budget = budget_label(*(points[0].get(field) for field in (
          "edge_int8_bytes", "edge_macs", "board_model_bytes")))
      axes.scatter([row[rate] for row in points],
                   [100 * row["accuracy"] for row in points],
                   color=f"C{sizes.index(size) % 10}",
                   label=f"latent {size}" + (f" · {budget}" if budget
                                             else ""))
    _draw_on_board(axes, on_board)
    front = sorted((row for row in rows if row[f"front_{rate}"]),
                   key=lambda row: row[rate])
    _step_front(axes, [(row[rate], 100 * row["accuracy"]) for row in front],
                "Pareto front")
    for row in front:
      axes.annotate(f"λ={row['lmbda']:g}", (row[rate], 100 * row["accuracy"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7)
    axes.set_xlabel(label)
    axes.set_ylabel("test accuracy (%)")
    axes.grid(True, alpha=0.4)
    axes.legend(fontsize=8, loc="lower right")
  figure.suptitle(title)
  save(figure, path)


# --- rate-distortion-classification curves ----------------------------------

# Universal curves, one style an encoder: (line, marker).
_ENCODER_STYLES = (("--", "s"), (":", "^"), ("-.", "v"))
_END_TO_END_STYLE = ("-", "o")


def _rate_colors(curves):
  """{(dim, levels): colour}, one a rate of `curves`, in their order."""
  rates = list(dict.fromkeys(rate for rate, _, _ in curves))
  colors = matplotlib.colormaps["viridis_r"](
      [.2 + .6 * i / max(len(rates) - 1, 1) for i in range(len(rates))])
  return dict(zip(rates, colors))


def _encoder_styles(curves):
  """{encoder λ or None (end to end): (line style, marker)}."""
  encoders = sorted({encoder for _, encoder, _ in curves
                     if encoder is not None})
  return {None: _END_TO_END_STYLE, **{
      encoder: _ENCODER_STYLES[i % len(_ENCODER_STYLES)]
      for i, encoder in enumerate(encoders)}}


def _finish_panels(figure, legend_axes, title, path):
  """Grids, `legend_axes`' legend and `title`, laid out tight; written to
  `path`."""
  for ax in figure.axes:
    ax.grid(alpha=.3)
  legend_axes.legend(fontsize=8, loc="best")
  figure.suptitle(title)
  figure.tight_layout()
  save(figure, path, dpi=120)


def rdc_curves(curves, title, path):
  """MSE and PSNR against the frozen classifier's accuracy on X̂.

  `curves` are (rate as (dim, levels), encoder λ, rows): a rate's end-to-end
  curve has encoder None; each curve's rows (with accuracy, mse, psnr,
  lambda_cls) in λ order. A colour a rate, end to end solid with circles,
  universal broken (a style an encoder); each point labelled with its λ.
  """
  figure = new_figure((11, 4.5), dpi=100, layout=None)
  axes = figure.subplots(1, 2)
  colors, styles = _rate_colors(curves), _encoder_styles(curves)
  for (dim, levels), encoder, rows in curves:
    color, (style, marker) = colors[(dim, levels)], styles[encoder]
    label = (f"R = {dim * math.log2(levels):g} bits ({dim}×{levels} "
             "levels), " + ("end-to-end" if encoder is None else
                            f"universal, encoder λ={encoder:g}"))
    for ax, value in zip(axes, ("mse", "psnr")):
      ax.plot([100. * r["accuracy"] for r in rows],
              [r[value] for r in rows], style, marker=marker,
              color=color, label=label)
      for r in rows:
        ax.annotate(f"λ={r['lambda_cls']:g}", (100. * r["accuracy"],
                                               r[value]),
                    textcoords="offset points", xytext=(4, 4),
                    fontsize=7, color=color)
  for ax, ylabel in zip(axes, ("MSE of X̂ (pixels in [0, 1])",
                               "PSNR of X̂ (dB)")):
    ax.set_xlabel("accuracy of the frozen classifier on X̂ (%)")
    ax.set_ylabel(ylabel)
  _finish_panels(figure, axes[1], title, path)


def rdc_gaps(curves, lambdas, claim, title, path):
  """Universal minus end-to-end accuracy (points) and PSNR (dB) against
  the decoder's λ.

  `curves` are universal ones, (rate, encoder λ, rows with accuracy_gap,
  psnr_gap_db, lambda_cls), in the order and colours of `rdc_curves`'s;
  `lambdas` every λ of the sweep, in order, an x tick each; `claim` the
  (points, dB) a universal decoder may lose, shaded as a band.
  """
  figure = new_figure((11, 4.5), dpi=100, layout=None)
  axes = figure.subplots(1, 2)
  colors, styles = _rate_colors(curves), _encoder_styles(curves)
  for (dim, levels), encoder, rows in curves:
    style, marker = styles[encoder]
    for ax, value in zip(axes, ("accuracy_gap", "psnr_gap_db")):
      ax.plot([lambdas.index(r["lambda_cls"]) for r in rows],
              [r[value] for r in rows], style, marker=marker,
              color=colors[(dim, levels)],
              label=f"R = {dim * math.log2(levels):g} bits, encoder "
                    f"λ={encoder:g}")
  for ax, allowed, ylabel in zip(
      axes, claim, ("accuracy: universal − end-to-end (points)",
                    "PSNR: universal − end-to-end (dB)")):
    ax.axhspan(-allowed, max(allowed, ax.get_ylim()[1]), color="green",
               alpha=.08, label=f"within {allowed:g} of end-to-end")
    ax.axhline(0, color="dimgray", linewidth=.8)
    ax.set_xticks(range(len(lambdas)), [f"{v:g}" for v in lambdas])
    ax.set_xlabel("λ of the decoder (c's cross-entropy weight)")
    ax.set_ylabel(ylabel)
  _finish_panels(figure, axes[0], title, path)


# --- a split kind's rate curve ----------------------------------------------


def accuracy_vs_bytes(curves, extremes, uncut, title, path):
  """Accuracy against one-image message bytes (log scale).

  `curves` and `extremes` are {label: rows with message_bytes_per_image
  and accuracy}: the split points' curves, coloured, then the trivial
  extremes, grey and dotted; `uncut`, the uncut backbone's accuracy (None:
  not measured), a dashed line.
  """
  figure = new_figure((9, 5.4))
  axes = figure.add_subplot()
  extreme_styles = iter(("*", "v", "D"))
  for i, (label, curve) in enumerate([*curves.items(), *extremes.items()]):
    curve = sorted(curve, key=lambda row: row["message_bytes_per_image"])
    style = (dict(marker="o", color=f"C{i}") if label in curves else
             dict(marker=next(extreme_styles), color="dimgray",
                  linestyle=":", markersize=9))
    axes.plot([row["message_bytes_per_image"] for row in curve],
              [100 * row["accuracy"] for row in curve], label=label,
              **style)
  if uncut is not None:
    axes.axhline(100 * uncut, color="dimgray", linestyle="--",
                 linewidth=1, label=f"uncut backbone ({100 * uncut:.2f}%)")
  axes.set_xscale("log")
  axes.set_xlabel("bytes per image sent (one-image message; whole file "
                  "for the image codecs)")
  axes.set_ylabel("test accuracy (%)")
  axes.set_title(title)
  axes.grid(True, which="both", alpha=0.3)
  axes.legend(fontsize=9)
  save(figure, path)
