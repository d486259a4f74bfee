"""Trains and evaluates every point of a split kind's rate configuration.

    python -m tfvaeclf.experiments.split_sweep \
        --flagfile=configs/fashion_mnist_split.flags \
        --rate_config=configs/small_resnet_rates.json \
        --modes=supervised,unsupervised --out=runs/split_sweep \
        [--split_points=S1] [--max_examples=N] \
        [--baselines=runs/baselines_fashion_mnist.csv]

The split-DNN paper (Ahuja et al., CVPR 2023, a neural rate estimator for
split DNNs) trains, for each split point, a list of bottleneck
configurations along its rate-accuracy curve. A rate configuration is that
list for one backbone, as JSON:

    {"backbone": "small_resnet",
     "split_points": {"S1": [{"compress_factor": 8, "lmbda": 0.5}, ...],
                      "S2": [...], ...}}

Every point, in every `--modes`, is trained with the flagfile's settings
(`--model=split` is implied; the point sets `--split_point`,
`--compress_factor`, `--lmbda` and `--bottleneck_mode`) into a model dir of
its own under `--out`, then evaluated on the real bitstreams of the test
split (`tfvaeclf.experiments.sweep`). A point evaluated before is only
read back, and an unfinished one resumes, so a killed sweep rerun repeats
nothing.

Each point is measured by sc2bench's three numbers: the data one image
costs (a one-image message, as a board sends it; the payload and the
one-image file too), the accuracy, and the edge's size (front + bottleneck
encoder: parameters, and TFLite bytes in float32 and int8; kept in the
point's board.json, `tfvaeclf.experiments.board.edge_size`). Beside them,
the two trivial extremes: the whole network on the board sending only the
class (log2(classes) bits, the edge size of the uncut network) and, with
`--baselines` (a tools/baselines.py table with the backbone as
`--classifier_dir`), the whole image sent as a JPEG or WebP file (no
network on the board).

Written into `--out`: `points.csv` (one row a point: split point, mode,
compress factor, lmbda, accuracy, the bytes, bpp, edge size, the model dir),
`uncut.json` (the uncut backbone on the same test images, the
`--backbone_from` classifier or the backbone with its `--backbone_weights`,
and its size on the board) and `accuracy_vs_bytes_MODE.png` for each mode.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import dataclasses
import functools
import json
import math
import os
import sys

from absl import flags

from tfvaeclf.export import exporter, sizes
from tfvaeclf import backbones, evaluate, fileio, models, specs, train
from tfvaeclf import model_dir as model_dir_lib
from tfvaeclf.experiments import board, plots, sweep
from tfvaeclf.experiments.points import load_baselines
from tfvaeclf.layout import ModelDir
from tfvaeclf.models import split

__all__ = ["read_rate_config", "sweep_points", "uncut_point",
           "trivial_extremes", "split_point_curves"]

FLAGS = flags.FLAGS
flags.DEFINE_string("rate_config", None,
                    "JSON: for each split point, a list of {compress_factor, "
                    "lmbda} points (see configs/*_rates.json).")
flags.DEFINE_list("modes", ["supervised"],
                  f"Bottleneck modes to train each point in: "
                  f"{', '.join(split.MODES)}.")
flags.DEFINE_list("split_points", None,
                  "Only these split points of --rate_config (default: all).")
flags.DEFINE_integer("edge_calibration", 64,
                     "Training images that set the int8 edge's ranges.")

MODEL = "split"
UNCUT_FILE = "uncut.json"
# The whole image to the server: the codecs drawn as that extreme.
IMAGE_CODECS = {"jpeg": "JPEG", "webp": "WebP"}
POINT_KEYS = ("compress_factor", "lmbda")


def _invalid(path, what):
  return cli.UserError(f"rate config {path}: {what}")


def _check_point(path, name, i, point):
  where = f"point {i + 1} of {name}"
  if not isinstance(point, dict) or set(point) != set(POINT_KEYS):
    raise _invalid(path, f"{where} must be an object with exactly "
                   f"{' and '.join(POINT_KEYS)}")
  factor, lmbda = point["compress_factor"], point["lmbda"]
  if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
    raise _invalid(path, f"{where}: compress_factor must be a positive "
                   f"integer, not {factor!r}")
  if (isinstance(lmbda, bool) or not isinstance(lmbda, (int, float))
      or lmbda < 0):
    raise _invalid(path, f"{where}: lmbda must be a number >= 0, not "
                   f"{lmbda!r}")
  return int(factor), float(lmbda)


def read_rate_config(path, backbone):
  """{split point: [(compress_factor, lmbda), ...]} from the JSON file at
  `path`, which must be for `backbone`; cli.UserError in one line if not."""
  try:
    with open(path, encoding="utf-8") as f:
      config = json.load(f)
  except OSError as e:
    raise _invalid(path, f"cannot read it ({e.strerror})") from None
  except ValueError as e:
    raise _invalid(path, f"not JSON ({e})") from None
  if (not isinstance(config, dict)
      or set(config) != {"backbone", "split_points"}
      or not isinstance(config["split_points"], dict)):
    raise _invalid(path, 'must be {"backbone": NAME, "split_points": '
                   '{POINT: [{"compress_factor": F, "lmbda": L}, ...]}}')
  if config["backbone"] != backbone:
    raise _invalid(path, f"it is for {config['backbone']}, the flags cut "
                   f"{backbone} (set --backbone)")
  if not config["split_points"]:
    raise _invalid(path, "it names no split point")
  try:
    known = backbones.split_points(backbone)
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  points = {}
  for name, entries in config["split_points"].items():
    if name not in known:
      raise _invalid(path, f"{backbone} has no split point {name!r} "
                     f"(choose from {', '.join(known)})")
    if not isinstance(entries, list) or not entries:
      raise _invalid(path, f"{name} must hold a non-empty list of points")
    points[name] = [_check_point(path, name, i, point)
                    for i, point in enumerate(entries)]
  return points


def sweep_points(rate_config, split_points, modes):
  """[(split point, mode, compress_factor, lmbda)] to train, in order."""
  unknown = sorted(set(split_points) - set(rate_config))
  if unknown:
    raise cli.UserError(f"--split_points {', '.join(unknown)}: not in the "
                        f"rate config (it has {', '.join(rate_config)})")
  bad_modes = sorted(set(modes) - set(split.MODES))
  if bad_modes or not modes:
    raise cli.UserError(f"--modes must name some of {', '.join(split.MODES)}"
                        f", not {','.join(modes)!r}")
  return [(point, mode, factor, lmbda)
          for point in split_points for mode in modes
          for factor, lmbda in rate_config[point]]


def _uncut_classifier(config):
  """The uncut network the split models start from, as a loaded classifier
  kind, or None when the backbone has random weights."""
  if config.backbone_from:
    return model_dir_lib.load_classifier(config.backbone_from)
  if not config.backbone_weights:
    return None
  model = models.build("classifier", {
      "image_shape": config.image_shape, "num_classes": config.num_classes,
      "backbone": config.backbone, "filters": config.backbone_widths,
      "backbone_weights": config.backbone_weights})
  return model_dir_lib.LoadedModel(model, b"", {})


def uncut_point(config, test, max_examples, out, batch_size, calibration):
  """The uncut backbone on the board: its test accuracy on `test` (its
  first `max_examples`, in batches of `batch_size`) and its edge size
  (int8 ranges from `calibration`), kept in `out/uncut.json` and read back
  from there while the backbone and the examples are the same; None
  without weights."""
  key = {"backbone": config.backbone,
         "backbone_from": config.backbone_from and os.path.abspath(
             config.backbone_from),
         "backbone_weights": config.backbone_weights and os.path.abspath(
             config.backbone_weights),
         "max_examples": max_examples}
  path = os.path.join(out, UNCUT_FILE)
  if os.path.exists(path):
    with open(path) as f:
      cached = json.load(f)
    if cached["key"] == key and "edge_int8_bytes" in cached["results"]:
      return cached["results"]
  loaded = _uncut_classifier(config)
  if loaded is None:
    return None
  results = evaluate.evaluate(loaded, test, batch_size, progress=False)
  model = loaded.model
  results.update(sizes.edge_size(
      lambda images: {"logits": model.classify(images)}, config.image_shape,
      model.count_params(), calibration()))
  fileio.write_json(path, {"key": key, "results": results})
  return results


def trivial_extremes(uncut, num_classes, baselines):
  """sc2bench's two trivial points: {label: [rows]}. The whole network on
  the board sends only the class; the whole image goes as a JPEG or WebP
  file (the backbone reading it as trained)."""
  extremes = {}
  if uncut is not None:
    extremes["whole network on the board, class sent"] = [{
        "accuracy": uncut["accuracy"],
        "message_bytes_per_image": math.log2(num_classes) / 8,
        **{k: uncut[k] for k in ("edge_parameters", "edge_float_bytes",
                                 "edge_int8_bytes")}}]
  for point in baselines:
    if point.name in IMAGE_CODECS and point.accuracy is not None:
      label = f"whole image as {IMAGE_CODECS[point.name]}"
      extremes.setdefault(label, []).append({
          "accuracy": point.accuracy,
          "message_bytes_per_image": point.bytes_per_image,
          "edge_parameters": 0})
  return extremes


def _point_dir(out, point, mode, factor, lmbda):
  return os.path.join(out, f"{point}_{mode}_cf{factor}_lmbda{lmbda:g}")


def split_point_curves(rows, mode):
  """{split point: its rows trained in `mode`}, in split point order."""
  curves = {}
  for row in rows:
    if row["mode"] == mode:
      curves.setdefault(row["split_point"], []).append(row)
  return dict(sorted(curves.items()))


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.rate_config or not FLAGS.out:
    raise cli.UserError(
        "usage: python -m tfvaeclf.experiments.split_sweep --flagfile=FLAGS "
        "--rate_config=RATES.json --out=DIR [--modes=supervised,"
        "unsupervised] [--split_points=S1,...] [--max_examples=N]")
  run = specs.from_flags(FLAGS, MODEL)
  backbone = run.model.backbone
  rate_config = read_rate_config(FLAGS.rate_config, backbone)
  todo = sweep_points(rate_config, FLAGS.split_points or list(rate_config),
                      FLAGS.modes)
  cache = {}
  try:
    splits = sweep.load_splits(run.data, cache)
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  test = splits.test.take(FLAGS.max_examples) if FLAGS.max_examples else (
      splits.test)
  count = FLAGS.edge_calibration

  @functools.cache
  def calibration():  # made once, only when a size is measured
    return exporter.calibration_sample(splits.train, count)

  config = run.with_data(splits.info).model
  uncut = uncut_point(config, test, FLAGS.max_examples, FLAGS.out,
                      run.train.batch_size, calibration)
  if uncut is not None:
    print(f"uncut {backbone}: {100 * uncut['accuracy']:.2f}% test accuracy",
          flush=True)
  baselines = [point for spec in FLAGS.baselines
               for point in load_baselines(spec)]
  rows, failed = [], []
  for i, (point, mode, factor, lmbda) in enumerate(todo, start=1):
    directory = _point_dir(FLAGS.out, point, mode, factor, lmbda)
    done = os.path.exists(ModelDir(directory).eval_path())
    print(f"[{i}/{len(todo)}] {point} {mode} compress_factor={factor} "
          f"lmbda={lmbda:g}: {'done before' if done else 'training'}",
          flush=True)
    variant = dataclasses.replace(run, model_dir=directory, model=(
        dataclasses.replace(run.model, split_point=point,
                            bottleneck_mode=mode, compress_factor=factor,
                            lmbda=lmbda)))
    try:
      results = sweep.train_and_evaluate(
          variant, max_examples=FLAGS.max_examples, splits_cache=cache)
    except ValueError as e:
      raise cli.UserError(f"{point} {mode}: {e}") from None
    except train.TrainingDiverged as e:
      print(f"  skipped: {e}", file=sys.stderr, flush=True)
      failed.append(directory)
      continue
    rows.append({"split_point": point, "mode": mode,
                 "compress_factor": factor, "lmbda": lmbda,
                 "accuracy": results["accuracy"],
                 "message_bytes_per_image": results[
                     "message_bytes_per_image"],
                 "bytes_per_image": results["bytes_per_image"],
                 "file_bytes_per_image": results["file_bytes_per_image"],
                 "bpp": results["bpp"],
                 **board.edge_size(directory, calibration),
                 "dir": directory})
    print(f"  {100 * results['accuracy']:.2f}% at "
          f"{results['bytes_per_image']:.2f} bytes per image", flush=True)
  extremes = trivial_extremes(uncut, config.num_classes, baselines)
  figures = []
  for mode in dict.fromkeys(row["mode"] for row in rows):
    figures.append(f"accuracy_vs_bytes_{mode}.png")
    plots.accuracy_vs_bytes(split_point_curves(rows, mode), extremes,
                            uncut and uncut["accuracy"],
                            f"{splits.info.name}: split {backbone}, {mode}",
                            os.path.join(FLAGS.out, figures[-1]))
  sweep.finish(FLAGS.out, rows, " and ".join(figures), failed)


if __name__ == "__main__":
  cli.run(main, argv=specs.flagfiles_first(sys.argv), many_models=True)
