"""The points a rate-accuracy comparison reads: evaluated model dirs and
the codecs' rate tables of tools/baselines.py.

A model dir's board.json (`python -m tfvaeclf.experiments.board`) gives
its point the edge budget: the int8 bytes, multiply-accumulates and TFLM
arena of what the board runs, and the int8 accuracy. A classifier's
board.json is a point of its own, kind "board": the classifier run whole
on the board, sending only the class (ceil(log2(classes)) bits), the
trivial extreme every coded point is set against.

TensorFlow-free and plot-free. Every command that sets models beside codecs
(`report`, `split_sweep`) reads them here, the same way, and shares the one
flag defined here, `--baselines`, without taking on another command's
flags. How the rates are counted is in tfvaeclf/experiments/report.py.
"""

import csv
import dataclasses
import os
import re
import sys

from absl import flags

from tfvaeclf.errors import UserError
from tfvaeclf.layout import ModelDir

__all__ = ["Point", "BOARD", "load_run", "load_board_classifier",
           "load_runs", "load_baselines", "codec_sweeps", "accuracy_kinds",
           "dataset_title", "setting_name"]

flags.DEFINE_list("baselines", [],
                  "Rate tables from tools/baselines.py: PATH.csv or "
                  "DATASET:PATH.csv.")


@dataclasses.dataclass(frozen=True)
class Point:
  """One model, or one codec at one quality. Accuracies are fractions."""
  dataset: str
  kind: str  # "model" or "codec"
  name: str  # the run dir's name, or the codec's
  setting: str  # model kind, entropy model and λ; or the codec's quality
  bpp: float  # whole file
  payload_bpp: float
  bytes_per_image: float
  payload_bytes_per_image: float
  accuracy: float = None
  finetuned_accuracy: float = None  # classifier fine-tuned on decoded images
  psnr: float = None
  # The edge budget (board.json; None without one): the int8 model the
  # board stores, its multiply-accumulates per image and TFLM arena, the
  # float32 models a coder runs beside it, and the int8 accuracy.
  edge_int8_bytes: int = None
  edge_macs: int = None
  edge_arena_bytes: int = None
  board_model_bytes: int = None
  board_accuracy: float = None
  # Where its images were read (eval.json's or the table's data_source,
  # e.g. "cifar10-jpeg-q75:PATH"); None where not recorded.
  source: str = None


# The kind of a classifier's point on the board: it sends the class.
BOARD = "board"


# The weight of each kind's objective: the first of these model config
# fields that a config has (an rdc config also has an unused `lmbda` of 0,
# a VAE's `lmbda` only scales the rate's gradient to the encoder).
_OBJECTIVE_WEIGHTS = (("lambda_cls", "λ_cls"), ("beta", "β"), ("lmbda", "λ"))


def _model_setting(config):
  model_config = config.get("model_config", {})
  parts = [str(config.get("model", "model"))]
  if "entropy_model" in model_config:
    parts.append(str(model_config["entropy_model"]))
  for field, symbol in _OBJECTIVE_WEIGHTS:
    if field in model_config:
      parts.append(f"{symbol}={model_config[field]:g}")
      break
  if "beta" in model_config and model_config.get("lmbda"):
    # A VAE whose encoder the rate shapes (--encoder_rate_weight).
    parts.append(f"λ_rate={model_config['lmbda']:g}")
  return ", ".join(parts)


def load_run(directory):
  """The point of one evaluated model dir."""
  run = ModelDir(directory)
  config = run.config
  results = run.eval()
  if results is None:
    raise UserError(f"{directory}: {_not_evaluated(run)}")
  try:
    dataset = config["dataset"]["name"]
    payload_bpp = float(results["bpp"])
    payload_size = float(results["bytes_per_image"])
    size = float(results.get("message_bytes_per_image", results.get(
        "file_bytes_per_image", payload_size)))
    bpp = payload_bpp * size / payload_size if payload_size else payload_bpp
    accuracy = float(results["accuracy"])
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"{run.config_path} or {run.eval_path()} lacks "
                    f"{e}") from None
  psnr = results.get("psnr")
  kind = "uncompressed" if results.get("uncompressed") else "model"
  return Point(dataset, kind, _name(directory), _model_setting(config), bpp,
               payload_bpp, size, payload_size, accuracy,
               psnr=None if psnr is None else float(psnr),
               source=_source(results), **_budget(run))


def _name(directory):
  return os.path.basename(os.path.normpath(os.path.abspath(directory)))


def _budget(run):
  """The Point fields of `run`'s board.json (none without one)."""
  board = run.board()
  if board is None:
    return {}
  fields = ("edge_int8_bytes", "edge_macs", "edge_arena_bytes",
            "board_model_bytes")
  budget = {field: board.get(field) for field in fields}
  budget["board_accuracy"] = board.get("accuracy")
  return budget


def load_board_classifier(directory):
  """The point of a classifier run whole on the board, sending the class,
  from its board.json; None unless `directory` holds a classifier (no
  coder: `class_bits` in board.json) whose int8 accuracy was measured."""
  run = ModelDir(directory)
  board = run.board()
  if not board or "class_bits" not in board or board.get(
      "model") != "classifier":
    return None
  config = run.config
  try:
    height, width = config["model_config"]["image_shape"][:2]
    size = board["class_bits"] / 8
    return Point(config["dataset"]["name"], BOARD, _name(directory),
                 "classifier, int8 on the board, class sent",
                 8 * size / (height * width), 8 * size / (height * width),
                 size, size, float(board["accuracy"]),
                 source=_source(board), **_budget(run))
  except (KeyError, TypeError, ValueError) as e:
    raise UserError(f"{run.config_path} or {run.board_path} lacks "
                    f"{e}") from None


def _source(results):
  """The data source an eval.json or board.json records: a string, else
  None (a file edited by hand may hold anything)."""
  source = results.get("data_source")
  return source if isinstance(source, str) else None


def _not_evaluated(run):
  return (f"no {os.path.basename(run.eval_path())} (python -m "
          f"tfvaeclf.evaluate --model_dir={run.path} makes it)")


def _nested_model_dirs(path):
  """Model dirs below `path`, not looking inside model dirs."""
  found = []
  for root, names, _ in os.walk(path):
    names.sort()
    runs = [name for name in names if ModelDir(os.path.join(root, name)).exists]
    found += [os.path.join(root, name) for name in runs]
    names[:] = [name for name in names if name not in runs]
  return found


def _model_dirs(path, note):
  """The model dir `path`, or the model dirs in it; `note` hears of the
  subdirs that hold model dirs deeper down, which are not read."""
  if not os.path.isdir(path):
    raise UserError(f"{path}: no such directory")
  if ModelDir(path).exists:
    return [path]
  subdirs = sorted(os.path.join(path, name) for name in os.listdir(path)
                   if os.path.isdir(os.path.join(path, name)))
  found = [d for d in subdirs if ModelDir(d).exists]
  nested = {d: _nested_model_dirs(d) for d in subdirs if d not in found}
  nested = {d: runs for d, runs in nested.items() if runs}
  if nested:
    example = os.path.dirname(next(iter(nested.values()))[0])
    note(f"skipping {sum(map(len, nested.values()))} model dirs nested "
         f"deeper in {', '.join(nested)} (--runs takes model dirs and their "
         f"parents, e.g. --runs={example})")
  if not found:
    raise UserError(f"{path}: neither a model dir (no {ModelDir.CONFIG})"
                    " nor a dir of model dirs")
  return found


def load_runs(paths, note=None):
  """Points of every evaluated model dir in `paths` (model dirs or their
  parents), and of every classifier measured on the board
  (`load_board_classifier`); `note(line)` hears of each dir skipped for
  want of either, and of model dirs nested deeper than `paths'` children.

  A point is named by its dir; dirs of the same name in different parents
  (two frontiers' `latent32_lmbda1`) are named PARENT/DIR."""
  note = note or (lambda line: print(line, file=sys.stderr))
  found = []
  for path in paths:
    for directory in _model_dirs(path, note):
      run = ModelDir(directory)
      on_board = load_board_classifier(directory)
      if os.path.exists(run.eval_path()):
        found.append((directory, load_run(directory)))
      elif on_board is None:
        note(f"skipping {directory}: {_not_evaluated(run)}")
      if on_board is not None:
        found.append((directory, on_board))
  dirs_by_name = {}
  for directory, point in found:
    dirs_by_name.setdefault(point.name, set()).add(
        os.path.abspath(directory))
  return [point if len(dirs_by_name[point.name]) == 1
          else dataclasses.replace(point, name=_parent_and_name(directory))
          for directory, point in found]


def _parent_and_name(directory):
  path = os.path.normpath(os.path.abspath(directory))
  return "/".join(path.split(os.sep)[-2:])


_REQUIRED_COLUMNS = ("codec", "quality", "bytes_per_image",
                     "payload_bytes_per_image", "bpp", "payload_bpp")


def _split_spec(spec):
  """`PATH` or `DATASET:PATH` -> (path, dataset or None)."""
  if os.path.exists(spec) or ":" not in spec:
    path, dataset = spec, None
  else:
    dataset, path = spec.rsplit(":", 1)
  if dataset is None:
    match = re.fullmatch(r"baselines_(.+)\.csv", os.path.basename(path))
    dataset = match.group(1) if match else None
  return path, dataset


def _number(row, column, where, optional=False):
  value = (row.get(column) or "").strip()
  if not value and optional:
    return None
  try:
    return float(value)
  except ValueError:
    raise UserError(f"{where}: {column} is {value!r}, not a "
                    "number") from None


def load_baselines(spec):
  """Points of one baselines CSV, `PATH` or `DATASET:PATH`."""
  path, dataset = _split_spec(spec)
  try:
    with open(path, newline="", encoding="utf-8") as f:
      reader = csv.DictReader(f)
      columns = reader.fieldnames or []
      rows = list(reader)
  except (OSError, UnicodeDecodeError, csv.Error) as e:
    raise UserError(f"{path}: cannot read it as CSV ({e})") from None
  missing = [c for c in _REQUIRED_COLUMNS if c not in columns]
  if missing:
    raise UserError(f"{path}: not a baselines table (no column "
                    f"{', '.join(missing)})")
  points = []
  for line, row in enumerate(rows, start=2):
    where = f"{path}, line {line}"
    row_dataset = (row.get("dataset") or "").strip() or dataset
    if not row_dataset:
      raise UserError(
          f"{path}: which dataset? Add a dataset column, name the file "
          f"baselines_DATASET.csv or pass --baselines=DATASET:{path}")
    names = {c: (row.get(c) or "").strip() for c in _REQUIRED_COLUMNS[:2]}
    empty = [c for c, name in names.items() if not name]
    if empty:
      raise UserError(f"{where}: no {' or '.join(empty)}")
    numbers = {c: _number(row, c, where) for c in _REQUIRED_COLUMNS[2:]}
    optional = {c: _number(row, c, where, optional=True)
                for c in ("accuracy", "finetuned_accuracy", "psnr")}
    points.append(Point(row_dataset, "codec", names["codec"],
                        names["quality"], **numbers, **optional,
                        source=(row.get("data_source") or "").strip()
                        or None))
  return points


def setting_name(codec, quality):
  """A codec's quality setting as the docs' tables name it: "q 75",
  "CRF 35", "level 2 (ratio 4)"."""
  if codec in ("hevc", "av1"):
    return f"CRF {quality}"
  if codec == "jpeg2000":  # OpenJPEG's compression ratio is twice the level
    return f"level {quality} (ratio {2 * int(quality)})"
  return f"q {quality}"


def codec_sweeps(points):
  """{codec name: its points in sweep order} for one dataset's points."""
  sweeps = {}
  for p in points:
    if p.kind == "codec":
      sweeps.setdefault(p.name, []).append(p)
  return sweeps


def accuracy_kinds(points):
  """[(Point field, label)] of the accuracies measured among `points`: as
  trained, and fine-tuned on decoded images where a codec has that."""
  kinds = [("accuracy", "as trained")]
  if any(p.finetuned_accuracy is not None for p in points):
    kinds.append(("finetuned_accuracy", "fine-tuned on decoded images"))
  return kinds


_JPEG_COPY = re.compile(r"[\w.]+-jpeg-q(\d+):")


def dataset_title(dataset, sources):
  """How a figure names its data: the dataset, and the JPEG copy its images
  were read from where `sources` (the points' data sources, None where not
  recorded) say so ("cifar10-jpeg-q75:PATH" -> "cifar10, JPEG q75 copy"),
  since such a copy is not the original's pixels."""
  qualities = sorted({match.group(1) for source in sources if source
                      for match in [_JPEG_COPY.match(source)] if match},
                     key=int)
  if not qualities:
    return dataset
  return f"{dataset}, JPEG q{'/'.join(qualities)} copy"

