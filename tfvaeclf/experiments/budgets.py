"""The edge budget as an axis: which points a board of a given size can run.

A budget is the bytes of the models the board stores (MLPerf Tiny sizes
its tasks so: the CIFAR-10 ResNet-8 is about 80 KB of int8 weights): the
int8 model, and the float32 models a coder runs beside it (a context
coder's slice coder). A point belongs to the smallest budget both fit; the
send-the-class point of a budget is the most accurate classifier run whole
on the board (`points.BOARD`) that fits it; the codecs run no network on
the board and stand beside every budget. `budget_markdown` writes the
table of each budget, `budget_label` the legend's words for a point.

TensorFlow-free and plot-free, as `points` is: the report reads it.
"""

import re

from absl import flags

from tfvaeclf.errors import UserError
from tfvaeclf.experiments.points import BOARD, codec_sweeps

__all__ = ["parse_budgets", "stored_bytes", "budget_of", "best_on_board",
           "format_bytes", "budget_label", "budget_markdown"]

flags.DEFINE_list("budgets", [],
                  "Edge budgets, int8 bytes of the model the board stores, "
                  "e.g. 5KB,20KB,80KB (KB = 1000 bytes, KiB = 1024; plain "
                  "numbers are bytes).")

_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000 ** 2,
          "mib": 1024 ** 2}


def parse_budgets(texts):
  """["5KB", "20KiB", "80000"] -> their bytes, ascending; UserError in one
  line for one that is not a size, or repeats."""
  budgets = []
  for text in texts:
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match and _UNITS.get(match.group(2).lower())
    if not unit or float(match.group(1)) <= 0:
      raise UserError(f"--budgets={text}: expected a size such as 20KB, "
                      "20KiB or 20000 (bytes)")
    budgets.append(round(float(match.group(1)) * unit))
  if len(set(budgets)) != len(budgets):
    raise UserError("--budgets: a budget is repeated")
  return sorted(budgets)


def stored_bytes(point):
  """What the board stores of `point`: its int8 model and the float32
  models beside it (a context coder's slice coder); None without a
  board.json."""
  if point.edge_int8_bytes is None:
    return None
  return point.edge_int8_bytes + (point.board_model_bytes or 0)


def budget_of(point, budgets):
  """The smallest of `budgets` that all `point`'s board stores fits
  (`stored_bytes`); None when it has no board.json or fits none."""
  size = stored_bytes(point)
  if size is None:
    return None
  return next((b for b in budgets if size <= b), None)


def best_on_board(points, budget):
  """The most accurate send-the-class point that fits `budget`, or None."""
  fits = [p for p in points if p.kind == BOARD
          and p.edge_int8_bytes is not None and p.edge_int8_bytes <= budget]
  return max(fits, key=lambda p: (p.accuracy, -p.edge_int8_bytes),
             default=None)


def format_bytes(size):
  """20480 -> "20.5 KB": bytes in decimal units, three digits."""
  for unit, scale in (("MB", 1e6), ("KB", 1e3)):
    if size >= scale:
      return f"{size / scale:.3g} {unit}"
  return f"{size:g} B"


def _macs(count):
  for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
    if count >= scale:
      return f"{count / scale:.3g} {unit}"
  return f"{count:g}"


def budget_label(int8_bytes, macs, board_model_bytes=None):
  """"20 KB int8, 1.2 M MAC" (and the float32 board models, if any) of a
  point's board.json figures; None without them."""
  if int8_bytes is None:
    return None
  label = f"{format_bytes(int8_bytes)} int8"
  if board_model_bytes:
    label += f" + {format_bytes(board_model_bytes)} float32"
  return label + f", {_macs(macs)} MAC"


def _percent(value):
  return "–" if value is None else f"{100 * value:.2f}"


def _number(value, form):
  return "–" if value is None else form(value)


_HEADER = ["point", "setting", "int8 bytes", "float32 board models",
           "MAC/image", "TFLM arena", "payload bytes/image",
           "bytes/image sent", "accuracy %", "int8 on the board %",
           "fine-tuned reader %"]


def _row(point, name):
  return [name, point.setting,
          _number(point.edge_int8_bytes, format_bytes),
          _number(point.board_model_bytes, format_bytes),
          _number(point.edge_macs, _macs),
          _number(point.edge_arena_bytes, format_bytes),
          f"{point.payload_bytes_per_image:.3g}",
          f"{point.bytes_per_image:.3g}", _percent(point.accuracy),
          _percent(point.board_accuracy),
          _percent(point.finetuned_accuracy)]


def _table(rows):
  return ["| " + " | ".join(row) + " |"
          for row in [_HEADER, ["---"] * len(_HEADER), *rows]]


def budget_markdown(dataset, points, budgets):
  """One dataset's table per budget, as Markdown: the models that belong to
  it (by payload bytes), its send-the-class point, then the codecs' rows;
  and a line naming the models above every budget or never measured."""
  lines = [f"### {dataset}: accuracy by edge budget", ""]
  models = sorted((p for p in points if p.kind == "model"),
                  key=lambda p: p.payload_bytes_per_image)
  codecs = [p for sweep in codec_sweeps(points).values() for p in sweep]
  for budget in budgets:
    rows = [_row(p, p.name) for p in models
            if budget_of(p, budgets) == budget]
    board = best_on_board(points, budget)
    if board is not None:
      rows.append(_row(board, f"send the class: {board.name}"))
    rows += [_row(p, f"codec {p.name}") for p in codecs]
    lines += [f"#### ≤ {format_bytes(budget)} of int8 on the board", ""]
    if board is None:
      lines += ["No classifier measured on the board fits this budget.", ""]
    lines += _table(rows) + [""]
  above = [p.name for p in models if p.edge_int8_bytes is not None
           and budget_of(p, budgets) is None]
  unmeasured = [p.name for p in models if p.edge_int8_bytes is None]
  if above:
    lines += [f"Above {format_bytes(budgets[-1])}: {', '.join(above)}.", ""]
  if unmeasured:
    lines += [f"No board.json (python -m tfvaeclf.experiments.board): "
              f"{', '.join(unmeasured)}.", ""]
  lines += ["int8 bytes: the int8 model the board stores (a coded model's "
            "encoder, a send-the-class classifier whole); the float32 "
            "board models (a context coder's slice coder) come beside it. "
            "A send-the-class point sends ceil(log2(classes)) bits; a "
            "codec runs no network on the board.", ""]
  return "\n".join(lines)
