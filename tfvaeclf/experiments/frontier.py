"""The rate frontier: accuracy against bytes per image, and its Pareto front.

    python -m tfvaeclf.experiments.frontier \
        --flagfile=configs/mnist_frontier.flags \
        --lambda_grid=0.5,1,2 --latent_grid=8,16 --out=runs/mnist_frontier \
        [--max_examples=N] [--budgets=5KB,20KB,80KB \
        --classifiers=runs/mnist_board_5k,... --baselines=CSV]

Every point of the grid (each `--latent_channels` of `--latent_grid` times
each `--lmbda` of `--lambda_grid`; an empty grid keeps the flagfile's
value) is trained with the flagfile's other settings into a model dir of
its own under `--out`, then evaluated on real range-coded strings of the
test split (`tfvaeclf.experiments.sweep`): payload bytes per image, and what a
one-image message (`tfvaeclf.coding.bitstream`) and a one-image file take. A
point evaluated before is only read back, an unfinished one resumes.

With `--budgets`, each point is also measured on the board
(`python -m tfvaeclf.experiments.board`, its int8 encoder's bytes,
multiply-accumulates, TFLM arena and int8 accuracy, kept in its
board.json), its budget goes into the plot's legend, and `budgets.md`
holds a table per budget (`tfvaeclf.experiments.budgets`): the points
whose int8 encoder fits it, the most accurate of the `--classifiers`
(classifier dirs measured by the board command) that fits it, sending the
class, and the codecs of `--baselines`.

Written into `--out`: `points.csv` (one row a point, with whether it is on
the Pareto front of accuracy against payload bytes and against message
bytes), `frontier_<dataset>.png` (both fronts, every point shown) and,
with `--budgets`, `budgets.md` (also printed).
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import dataclasses
import os
import sys

from absl import flags

from tfvaeclf import fileio, specs, train
from tfvaeclf.experiments import board, budgets as budgets_lib, plots, sweep
from tfvaeclf.experiments import points as points_lib
from tfvaeclf.layout import ModelDir
from tfvaeclf.experiments.pareto import pareto_front

__all__ = ["grid_points", "on_board", "budget_tables", "MODEL", "RATES",
           "BUDGET_FIELDS"]

FLAGS = flags.FLAGS
flags.DEFINE_list("lambda_grid", [],
                  "Values of --lmbda to train (default: the flagfile's).")
flags.DEFINE_list("latent_grid", [],
                  "Values of --latent_channels to train (default: the "
                  "flagfile's).")
flags.DEFINE_list("classifiers", [],
                  "With --budgets: classifier model dirs measured by "
                  "python -m tfvaeclf.experiments.board, the send-the-class "
                  "points.")

MODEL = "joint"
# The rates a point is counted in: eval.json's field, and its label.
RATES = (("bytes_per_image", "payload bytes per image"),
         ("message_bytes_per_image", "one-image message bytes"))


def _values(name, texts, run):
  """`texts` as values of flag `name` of `run` (its own if empty);
  cli.UserError in one line if one is not, or one repeats."""
  if not texts:
    return [getattr(run.model, name)]
  try:
    values = [specs.parse_value(run, name, text) for text in texts]
  except ValueError as e:
    raise cli.UserError(f"--{name}: {e}") from None
  if len(set(values)) != len(values):
    raise cli.UserError(f"--{name}: a value is repeated")
  return values


def grid_points(run, latent_texts, lambda_texts):
  """[(latent_channels, lmbda)] of the grid, in training order."""
  return [(channels, lmbda)
          for channels in _values("latent_channels", latent_texts, run)
          for lmbda in _values("lmbda", lambda_texts, run)]


# What a point's row takes of its board.json.
BUDGET_FIELDS = ("edge_int8_bytes", "edge_macs", "edge_arena_bytes",
                 "board_model_bytes")


def on_board(directory, calibration_examples, num_images, data_dir):
  """The board's figures of the point in `directory`: its board.json, made
  by `board.measure_dir` if it has no int8 accuracy yet."""
  measured = ModelDir(directory).board()
  if measured is None or "accuracy" not in measured:
    measured = board.measure_dir(directory, calibration_examples,
                                 num_images, data_dir, progress=False)
  return {**{field: measured[field] for field in BUDGET_FIELDS},
          "board_accuracy": measured["accuracy"]}


def budget_tables(dataset, directories, classifiers, baselines, budgets):
  """`budgets.budget_markdown` of the points in `directories`, the
  send-the-class points `classifiers` and the `baselines` specs' codecs
  of `dataset`."""
  points = [points_lib.load_run(d) for d in directories] + classifiers
  points += [p for spec in baselines for p in points_lib.load_baselines(spec)
             if p.dataset == dataset]
  return budgets_lib.budget_markdown(dataset, points, budgets)


def _point_dir(out, channels, lmbda):
  return os.path.join(out, f"latent{channels}_lmbda{lmbda:g}")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.out:
    raise cli.UserError(
        "usage: python -m tfvaeclf.experiments.frontier --flagfile=FLAGS "
        "--out=DIR [--lambda_grid=L1,L2,...] [--latent_grid=N1,N2,...] "
        "[--max_examples=N]")
  run = specs.from_flags(FLAGS)
  if run.model_name != MODEL:
    raise cli.UserError(f"the frontier trains --model={MODEL}, not "
                        f"{run.model_name}")
  budgets = budgets_lib.parse_budgets(FLAGS.budgets)
  if (FLAGS.classifiers or FLAGS.baselines) and not budgets:
    raise cli.UserError("--classifiers and --baselines go into the tables "
                        "per budget: give --budgets too (e.g. "
                        "--budgets=5KB,20KB,80KB)")
  todo = grid_points(run, FLAGS.latent_grid, FLAGS.lambda_grid)
  rows, failed, cache, sources = [], [], {}, []
  for i, (channels, lmbda) in enumerate(todo, start=1):
    directory = _point_dir(FLAGS.out, channels, lmbda)
    done = os.path.exists(ModelDir(directory).eval_path())
    print(f"[{i}/{len(todo)}] latent_channels={channels} lmbda={lmbda:g}: "
          f"{'done before' if done else 'training'}", flush=True)
    variant = dataclasses.replace(run, model_dir=directory, model=(
        dataclasses.replace(run.model, latent_channels=channels,
                            lmbda=lmbda)))
    try:
      results = sweep.train_and_evaluate(
          variant, max_examples=FLAGS.max_examples, splits_cache=cache)
    except ValueError as e:
      raise cli.UserError(f"latent_channels={channels} lmbda={lmbda:g}: "
                          f"{e}") from None
    except train.TrainingDiverged as e:
      print(f"  skipped: {e}", file=sys.stderr, flush=True)
      failed.append(directory)
      continue
    sources.append(results.get("data_source"))
    rows.append({"latent_channels": channels, "lmbda": lmbda,
                 "accuracy": results["accuracy"],
                 **{rate: results[rate] for rate, _ in RATES},
                 "file_bytes_per_image": results["file_bytes_per_image"],
                 "num_images": results["num_images"], "dir": directory})
    if budgets:
      rows[-1].update(on_board(directory, FLAGS.calibration_examples,
                               FLAGS.max_examples, run.data.data_dir))
    print(f"  {100 * results['accuracy']:.2f}% at "
          f"{results['bytes_per_image']:.2f} bytes per image "
          f"({results['message_bytes_per_image']:.2f} as a message)",
          flush=True)
  for rate, _ in RATES:
    fronts = pareto_front([(row[rate], row["accuracy"]) for row in rows])
    for row, on_front in zip(rows, fronts):
      row[f"front_{rate}"] = on_front
  figure = f"frontier_{run.data.name}.png"
  classifiers = [p for p in points_lib.load_runs(FLAGS.classifiers)
                 if p.kind == points_lib.BOARD and p.dataset == run.data.name]
  title = points_lib.dataset_title(run.data.name, sources)
  plots.frontier(rows, RATES, f"{title}: accuracy against rate, "
                 f"{run.model_name} ({run.model.latent} latent, "
                 f"{run.model.entropy_model})", os.path.join(FLAGS.out, figure),
                 classifiers)
  if budgets:
    tables = budget_tables(run.data.name, [row["dir"] for row in rows],
                           classifiers, FLAGS.baselines, budgets)
    with fileio.atomic_writer(os.path.join(FLAGS.out, "budgets.md"),
                              "w") as f:
      f.write(tables)
    print(tables)
  sweep.finish(FLAGS.out, rows, figure, failed)


if __name__ == "__main__":
  cli.run(main, argv=specs.flagfiles_first(sys.argv), many_models=True)
