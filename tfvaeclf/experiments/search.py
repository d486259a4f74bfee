"""Searches a model kind's training flags with keras-tuner.

    python -m tfvaeclf.experiments.search \
        --flagfile=configs/mnist_joint_search.flags \
        --search_dir=runs/mnist_joint_search

The flagfile holds the flags of `tfvaeclf.train`, which every trial shares
(read once into a `specs.RunSpec`; a trial is that spec with its grid
values replaced), and the search: a `--grid=NAME:V1,V2,...` per
hyperparameter (a training flag of the model kind, or `conv_layers`),
`--tuner=grid|hyperband|random`, `--max_trials` and
`--objective=accuracy|budget|lagrangian`.

Each trial is an ordinary training run into SEARCH_DIR/trials/<trial id>/,
a model dir that `tfvaeclf.evaluate` reads like any other. A trial is scored
from the last epoch of its history.csv: `val_accuracy`, and `val_bpp`, the
rate the model's own prior estimates on the validation split (not counted
from real bitstreams; evaluate a trial dir for those).

Killed and rerun with the same flags, the search carries on: finished trials
are not repeated, and the trial that was running resumes from its last
finished epoch. A rerun with other search flags is refused.

Two-stage trials (the β-VAE classifier paper trains classifiers on a
frozen, pretrained VAE): a `--stage2=NAME=VALUE` per training flag the
second stage changes, e.g. `--stage2=head=selu5 --stage2=epochs=3`. A
trial then trains stage 1 as above into trials/ID/, and stage 2 into
trials/ID/stage2/: the same settings with those flags changed, the kind's
`PRETRAINED_PARTS` (its encoder and coder; a VAE's decoder too) loaded from
trials/ID/ and kept fixed (`--freeze_encoder_from`). The objective reads
stage 2's `val_accuracy`; `val_bpp` is stage 1's, whose frozen coder stage
2 shares. A trial killed in stage 2 reruns only stage 2.

    search.json   the flags the search was started with
    tuner/        keras-tuner's oracle state and trial records
    trials/ID/    one model dir per trial (two-stage: stage 1's; stage 2's
                  in trials/ID/stage2/)
    trials.csv    every trial: hyperparameters, metrics, seconds, status
                  (two-stage: also stage2_epochs, stage1_val_accuracy)
    best.flags    the best trial as a flagfile for tfvaeclf.train

Distributed: start the same command once with KERASTUNER_TUNER_ID=chief
(it serves the oracle at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT and
writes the table at the end) and once per worker with its own
KERASTUNER_TUNER_ID; every worker trains its trials into the shared
SEARCH_DIR.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time

from absl import flags
import keras_tuner as kt
import tensorflow as tf

from tfvaeclf import fileio, models, specs, train
from tfvaeclf.experiments import sweep
from tfvaeclf.layout import ModelDir

__all__ = ["TUNERS", "OBJECTIVES", "STAGE2_DIR",
           "apply_conv_layers", "objective_score", "parse_grid",
           "parse_stage2", "trial_spec", "stage2_spec", "build_oracle",
           "TrainingTuner"]

FLAGS = flags.FLAGS

TUNERS = ("grid", "hyperband", "random")
OBJECTIVES = ("accuracy", "budget", "lagrangian")

flags.DEFINE_string("search_dir", None,
                    "Where the search keeps its state, trials and results.")
flags.DEFINE_multi_string(
    "grid", [], "NAME:V1,V2,...: a hyperparameter and its values (repeat "
    "the flag). NAME is a training flag of the model kind, or conv_layers.")
flags.DEFINE_string("tuner", "grid", f"One of {', '.join(TUNERS)}.")
flags.DEFINE_integer("max_trials", None,
                     "At most this many trials (grid: default every point; "
                     "random: default 10; hyperband: its own schedule).")
flags.DEFINE_string(
    "objective", "accuracy",
    "accuracy; budget: accuracy at val_bpp <= --max_bpp; lagrangian: "
    "accuracy - --tradeoff * val_bpp.")
flags.DEFINE_float("max_bpp", None,
                   "The rate budget of --objective=budget, bits per pixel.")
flags.DEFINE_float("tradeoff", 0.1,
                   "Accuracy (0..1) worth one bit per pixel, for "
                   "--objective=lagrangian.")
flags.DEFINE_multi_string(
    "stage2", [], "NAME=VALUE: makes every trial two-stage (repeat the "
    "flag): stage 2 trains with this training flag changed on stage 1's "
    "frozen encoder, and is what the objective scores.")
flags.DEFINE_integer("hyperband_factor", 3,
                     "Hyperband keeps 1/factor of the trials each round; "
                     "--epochs is its most epochs per trial.")

# Training settings a trial may vary, besides the fields of the kind's config.
TRAINING_HPARAMS = ("batch_size", "learning_rate", "lr_schedule", "augment",
                    "epochs", "seed")
# Flags that say where data lives, not what a search is.
_LOCATION_FLAGS = ("data_dir", "download")
# A two-stage trial's second model dir, inside its first.
STAGE2_DIR = "stage2"


def apply_conv_layers(run, n):
  """`run` with `n` encoder conv layers, as its kind sets them (the kind's
  `with_conv_layers`, from its current widths)."""
  return dataclasses.replace(run, model=models.get(
      run.model_name).with_conv_layers(run.model, n))


def objective_score(objective, val_accuracy, val_bpp, max_bpp=None,
                    tradeoff=0.):
  """The number the tuner maximizes, from a trial's last validation epoch.

  accuracy:   val_accuracy.
  budget:     val_accuracy when val_bpp <= max_bpp (a score in [0, 1]);
              otherwise val_accuracy * max_bpp / val_bpp - 1, in [-1, 0):
              every trial within budget ranks above every trial over it,
              and among those over it accuracy still counts, discounted by
              how far over the rate is (twice the budget halves it). So a
              search whose trials are all over budget picks an accurate
              one near the budget, not the one with the least rate.
  lagrangian: val_accuracy - tradeoff * val_bpp.
  """
  if objective == "accuracy":
    return val_accuracy
  if objective == "budget":
    if val_bpp <= max_bpp:
      return val_accuracy
    return val_accuracy * max_bpp / val_bpp - 1.
  if objective == "lagrangian":
    return val_accuracy - tradeoff * val_bpp
  raise ValueError(f"Unknown objective {objective!r}.")


def _searchable(model_name):
  names = set(specs.model_flag_names(model_name)) | set(TRAINING_HPARAMS)
  if models.get(model_name).CONV_LAYERS_FIELD:
    names.add("conv_layers")
  return sorted(names)


def _parse_value(run, name, text):
  if name == "conv_layers":
    if not text.isdigit() or int(text) < 1:
      raise ValueError("conv_layers must be a whole number >= 1")
    return int(text)
  return specs.parse_value(run, name, text)


def _named(flag, spec, separator, example, run, allowed):
  """`--flag=NAME<separator>TEXT` -> (NAME, TEXT); NAME one of `allowed`."""
  name, found, text = (part.strip() for part in spec.partition(separator))
  if not found or not name or not text:
    raise cli.UserError(f"--{flag}={spec}: expected NAME{separator}"
                        f"{example}")
  if name not in allowed:
    raise cli.UserError(
        f"--{flag}={spec}: {name} is not a hyperparameter of model "
        f"{run.model_name}; choose from {', '.join(allowed)}")
  return name, text


def parse_grid(grid, run):
  """`--grid` specs -> the keras-tuner search space, one Choice a name;
  the names are flags of `run` (a `specs.RunSpec`), or conv_layers."""
  allowed = _searchable(run.model_name)
  space = kt.HyperParameters()
  for spec in grid:
    name, text = _named("grid", spec, ":", "VALUE,VALUE,..., e.g. "
                        "--grid=kernel_size:3,4,5", run, allowed)
    if name in space.values:
      raise cli.UserError(f"--grid={spec}: {name} is given twice")
    try:
      values = [_parse_value(run, name, v.strip()) for v in text.split(",")]
    except ValueError as e:
      raise cli.UserError(f"--grid={spec}: {e}") from None
    if any(isinstance(v, tuple) for v in values):
      raise cli.UserError(f"--grid={spec}: list flags cannot be searched "
                          "(search the depth with conv_layers)")
    if len(set(values)) != len(values):
      raise cli.UserError(f"--grid={spec}: a value is repeated")
    space.Choice(name, values)
  if not space.space:
    raise cli.UserError("nothing to search: give --grid=NAME:VALUES")
  return space


def parse_stage2(stage2, run):
  """`--stage2` specs -> {flag name: value}: what the second stage of each
  trial of `run` (a `specs.RunSpec`) changes; {} for one-stage trials."""
  if stage2 and not models.get(run.model_name).PRETRAINED_PARTS:
    raise cli.UserError(f"--stage2: model {run.model_name} has no encoder "
                        "to freeze, so it trains in one stage")
  # conv_layers would change the encoder that stage 2 loads.
  allowed = [name for name in _searchable(run.model_name)
             if name != "conv_layers"]
  values = {}
  for spec in stage2:
    name, text = _named("stage2", spec, "=", "VALUE, e.g. "
                        "--stage2=head=selu5", run, allowed)
    if name in values:
      raise cli.UserError(f"--stage2={spec}: {name} is given twice")
    try:
      values[name] = specs.parse_value(run, name, text)
    except ValueError as e:
      raise cli.UserError(f"--stage2={spec}: {e}") from None
  return values


def trial_spec(run, values, model_dir=None):
  """`run` with one trial's hyperparameter values, into `model_dir`.

  `values` are flag names, `conv_layers`, and Hyperband's `tuner/...`
  entries, of which `tuner/epochs` sets the epochs to train to.
  """
  result = specs.with_flags(run, {
      name: value for name, value in values.items()
      if name != "conv_layers" and not name.startswith("tuner/")})
  if "conv_layers" in values:
    result = apply_conv_layers(result, values["conv_layers"])
  if "tuner/epochs" in values:
    result = specs.with_flags(result, {"epochs": values["tuner/epochs"]})
  return dataclasses.replace(result, model_dir=model_dir)


def stage2_spec(trial_run, stage2):
  """The second stage of the trial `trial_run`: its settings with `stage2`
  (from `parse_stage2`) set, on its frozen encoder, into its STAGE2_DIR."""
  return dataclasses.replace(
      specs.with_flags(trial_run, {
          **stage2, "freeze_encoder_from": trial_run.model_dir}),
      model_dir=os.path.join(trial_run.model_dir, STAGE2_DIR))


def _check_stage2_fits(run, stage2):
  """Refuses `--stage2` flags that reshape the parts stage 2 loads."""
  def shapes(spec):
    model = models.build(spec.model_name, spec.model)
    model.build_from_config()
    return [tuple(v.shape) for name in model.PRETRAINED_PARTS
            for v in getattr(model, name).variables]
  second = stage2_spec(dataclasses.replace(run, model_dir="trial"), stage2)
  if shapes(run) != shapes(second):
    parts = models.get(run.model_name).PRETRAINED_PARTS
    raise cli.UserError(
        f"--stage2 reshapes the {', '.join(parts)} that stage 2 loads frozen"
        " from stage 1; change only the head's flags and training flags")


def build_oracle(tuner, space, *, max_trials=None, max_epochs=1, factor=3,
                 seed=0):
  """The keras-tuner oracle for `--tuner`; it maximizes the metric "score"."""
  options = dict(
      objective=kt.Objective("score", direction="max"),
      hyperparameters=space, allow_new_entries=False, tune_new_entries=False,
      seed=seed + 1,  # keras-tuner takes seed 0 for "no seed"
      # A failed trial (NaN loss, an invalid combination) is recorded in the
      # table and the search goes on.
      max_consecutive_failed_trials=sys.maxsize)
  oracle = _oracle(tuner, options, max_trials, max_epochs, factor)
  oracle.verbose = 0  # the tuner prints a line per trial instead
  return oracle


def _oracle(tuner, options, max_trials, max_epochs, factor):
  if tuner == "grid":
    grid_size = math.prod(
        len(hp.values) for hp in options["hyperparameters"].space)
    return kt.oracles.GridSearchOracle(
        max_trials=min(max_trials or grid_size, grid_size), **options)
  if tuner == "random":
    return kt.oracles.RandomSearchOracle(max_trials=max_trials or 10,
                                         **options)
  if tuner == "hyperband":
    oracle = kt.oracles.HyperbandOracle(max_epochs=max_epochs, factor=factor,
                                        **options)
    oracle.max_trials = max_trials
    return oracle
  raise cli.UserError(f"unknown --tuner={tuner}; choose one of "
                      f"{', '.join(TUNERS)}")


def _start_from(parent_dir, directory):
  """Hyperband: a trial that trains an earlier one further starts from it."""
  if os.path.isdir(ModelDir(directory).checkpoint_dir):
    return  # this trial itself is being resumed
  partial = directory + ".partial"
  shutil.rmtree(partial, ignore_errors=True)
  ModelDir(parent_dir).copy_state(partial)
  shutil.rmtree(directory, ignore_errors=True)
  os.replace(partial, directory)


def _describe(values):
  return " ".join(f"{name}={value}" for name, value in values.items()
                  if name == "tuner/epochs" or not name.startswith("tuner/"))


class TrainingTuner(kt.Tuner):
  """Runs each trial as `train.run_training` into SEARCH_DIR/trials/ID
  (two-stage: then again into its STAGE2_DIR).

  Every process of a distributed search builds one; keras-tuner hands its
  trials out (through the chief's oracle when there is one).
  """

  def __init__(self, oracle, search_dir, run, *, objective, max_bpp=None,
               tradeoff=0., splits=None, stage2=None):
    """`run` (a `specs.RunSpec`) is what every trial varies; `splits`, if
    given, are its dataset's, loaded; `stage2` (from `parse_stage2`), if
    not empty, makes every trial two-stage."""
    self.search_dir = search_dir
    self.run = run
    self.stage2 = stage2 or {}
    self.objective = objective
    self.max_bpp, self.tradeoff = max_bpp, tradeoff
    self._splits = {}
    if splits is not None:
      self._splits[sweep.dataset_key(run.data)] = splits
    super().__init__(oracle, directory=search_dir, project_name="tuner",
                     overwrite=False)

  def trial_dir(self, trial_id):
    return os.path.join(self.search_dir, "trials", str(trial_id))

  def _load(self, data_spec):
    return sweep.load_splits(data_spec, self._splits)

  def run_trial(self, trial, *args, **kwargs):
    try:
      return self._train(trial)
    except kt.errors.FailedTrialError:
      raise
    except Exception as e:  # keras-tuner would swallow it; stop instead
      raise kt.errors.FatalError(
          f"trial {trial.trial_id}: {type(e).__name__}: {e}") from e

  def _train(self, trial):
    tf.keras.backend.clear_session()  # one process trains many models
    values = trial.hyperparameters.values
    directory = self.trial_dir(trial.trial_id)
    run = trial_spec(self.run, values, directory)
    if "tuner/trial_id" in values:
      _start_from(self.trial_dir(values["tuner/trial_id"]), directory)
    run = run.with_data(self._load(run.data).info)
    stages = [run] + ([stage2_spec(run, self.stage2)] if self.stage2 else [])
    try:
      for stage in stages:  # validates the combination
        models.build(stage.model_name, stage.model)
    except ValueError as e:
      raise kt.errors.FailedTrialError(str(e)) from None
    (rows, seconds), *second = [self._train_stage(stage) for stage in stages]
    bpp = float(rows[-1]["val_bpp"])
    metrics = {"val_accuracy": float(rows[-1]["val_accuracy"]),
               "val_bpp": bpp, "train_seconds": seconds, "epochs": len(rows)}
    if second:  # stage 2 is scored; its frozen coder has stage 1's rate
      (rows2, seconds2), = second
      metrics.update(stage1_val_accuracy=metrics["val_accuracy"],
                     val_accuracy=float(rows2[-1]["val_accuracy"]),
                     stage2_epochs=len(rows2),
                     train_seconds=seconds + seconds2)
    metrics["score"] = objective_score(self.objective,
                                       metrics["val_accuracy"], bpp,
                                       self.max_bpp, self.tradeoff)
    return metrics

  def _train_stage(self, run):
    """Trains (or resumes, or only re-stamps) `run`; returns its history
    rows and training seconds."""
    start = time.monotonic()
    try:
      train.run_training(run, self._load(run.data),
                         verbose=2 if sys.stdout.isatty() else 0)
    except train.TrainingDiverged as e:
      raise kt.errors.FailedTrialError(str(e)) from None
    rows = ModelDir(run.model_dir).history()
    if "seconds" in rows[-1]:  # every epoch's, also those of an earlier run
      return rows, sum(float(row["seconds"]) for row in rows)
    return rows, time.monotonic() - start

  def on_search_begin(self):
    if not self._is_worker():
      self.save()  # so that a kill in the first trial still resumes

  def on_trial_begin(self, trial):
    print(f"trial {trial.trial_id}: {_describe(trial.hyperparameters.values)}"
          f" -> {self.trial_dir(trial.trial_id)}", flush=True)

  def on_trial_end(self, trial):
    super().on_trial_end(trial)
    trial = self.oracle.get_trial(trial.trial_id)
    row = _row(trial, [], two_stage=bool(self.stage2))
    if row["status"] == "completed":
      first = (f"stage 1 val_accuracy {row['stage1_val_accuracy']:.4f}, "
               "stage 2 " if self.stage2 else "")
      print(f"trial {trial.trial_id}: {first}val_accuracy "
            f"{row['val_accuracy']:.4f}"
            f", val_bpp {row['val_bpp']:.4f}, score {row['score']:.4f}, "
            f"{row['train_seconds']:.0f} s", flush=True)
    else:
      reason = (trial.message or "").strip().splitlines()
      print(f"trial {trial.trial_id}: {row['status']}"
            f"{': ' + reason[-1] if reason else ''}", flush=True)

  def _get_tuner_fname(self):
    # A standalone search and the chief share one state file, so that a
    # search can be resumed alone after it was started distributed.
    if self._is_worker():
      return super()._get_tuner_fname()
    return os.path.join(str(self.project_dir), "tuner.json")


def _row(trial, names, two_stage=False):
  """A trial's table row; a two-stage trial's val_accuracy is stage 2's."""
  def metric(name):
    if trial.metrics.exists(name):
      return trial.metrics.get_last_value(name)
    return None

  def count(name):
    value = metric(name)
    return None if value is None else int(value)
  values = trial.hyperparameters.values
  stage2 = {"stage2_epochs": count("stage2_epochs"),
            "stage1_val_accuracy": metric("stage1_val_accuracy")}
  return {"trial": trial.trial_id,
          **{name: values.get(name) for name in names},
          "epochs": count("epochs"), **(stage2 if two_stage else {}),
          "val_accuracy": metric("val_accuracy"),
          "val_bpp": metric("val_bpp"), "score": metric("score"),
          "train_seconds": metric("train_seconds"),
          "status": str(trial.status).lower()}


def trial_table(oracle, two_stage=False):
  """One row per trial, in trial order."""
  names = [hp.name for hp in oracle.get_space().space]
  return [_row(trial, names, two_stage)
          for _, trial in sorted(oracle.trials.items())]


def _shown(value):
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.6g}"
  return str(value)


def format_table(rows):
  columns = list(rows[0])
  cells = [columns] + [[_shown(row[c]) for c in columns] for row in rows]
  widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
  return "\n".join("  ".join(cell.ljust(width) for cell, width in
                             zip(line, widths)).rstrip() for line in cells)


def write_table(path, rows):
  with fileio.atomic_writer(path, "w") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows({k: _shown(v) for k, v in row.items()} for row in rows)


def write_best_flags(path, run, trial, header):
  """The best trial of a search of `run` as a flagfile that
  `tfvaeclf.train` takes as it is."""
  settings = trial_spec(run, trial.hyperparameters.values)
  lines = [f"# {line}" for line in header] + specs.to_flags(settings)
  with fileio.atomic_writer(path, "w") as f:
    f.write("\n".join(lines) + "\n")


def _stage2_header(row, path, first, stage2_specs):
  """best.flags' lines on a two-stage trial: the flagfile `path` is stage
  1's, which trained into the dir `first`; `stage2_specs` are --stage2's."""
  return [f"This is stage 1 (val_accuracy {row['stage1_val_accuracy']:.4f}"
          "); stage 2 trained on its frozen encoder as",
          f"  python -m tfvaeclf.train --flagfile={path} "
          f"--freeze_encoder_from={first} "
          f"{' '.join(f'--{spec}' for spec in stage2_specs)} "
          f"--model_dir={os.path.join(first, STAGE2_DIR)}"]


def _search_flags(search, run):
  """What makes a search the same search when it is rerun: the search
  flags' values (`search`) and the training flags of `run`."""
  return json.loads(json.dumps({
      **search, "training": {
          name: value for name, value in specs.flag_items(run)
          if name not in _LOCATION_FLAGS}}))


def _check_same_search(search_dir, search_flags):
  """Refuses to resume a search dir that was started with other flags."""
  path = os.path.join(search_dir, "search.json")
  if not os.path.exists(path):
    fileio.write_json(path, search_flags)
    return
  with open(path) as f:
    old = json.load(f)
  changed = [key for key in sorted(set(old) | set(search_flags))
             if key != "training" and old.get(key) != search_flags.get(key)]
  old_training, training = old.get("training", {}), search_flags["training"]
  changed += [key for key in sorted(set(old_training) | set(training))
              if old_training.get(key) != training.get(key)]
  if changed:
    raise cli.UserError(
        f"{search_dir} holds a search started with other flags "
        f"({', '.join(changed)}); rerun it with its own flags to resume it, "
        "or use a new --search_dir")


def _role():
  """"chief", "worker" or None, from keras-tuner's environment variables."""
  if "KERASTUNER_ORACLE_IP" not in os.environ:
    return None
  return ("chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "")
          else "worker")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.search_dir:
    raise cli.UserError("--search_dir is required")
  if FLAGS.tuner not in TUNERS:
    raise cli.UserError(f"unknown --tuner={FLAGS.tuner}; choose one of "
                        f"{', '.join(TUNERS)}")
  if FLAGS.objective not in OBJECTIVES:
    raise cli.UserError(f"unknown --objective={FLAGS.objective}; choose one "
                        f"of {', '.join(OBJECTIVES)}")
  if FLAGS.objective == "budget" and not (FLAGS.max_bpp or 0) > 0:
    raise cli.UserError("--objective=budget needs --max_bpp > 0")
  if FLAGS.tuner == "hyperband" and "epochs" in [
      spec.partition(":")[0].strip() for spec in FLAGS.grid]:
    raise cli.UserError("hyperband sets the epochs itself (up to --epochs); "
                        "remove --grid=epochs:...")
  if FLAGS.tuner == "hyperband" and FLAGS.stage2:
    raise cli.UserError("hyperband trains a trial further from an earlier "
                        "one, which two-stage trials do not support; use "
                        "--tuner=grid or random with --stage2")
  run = specs.from_flags(FLAGS)
  space = parse_grid(FLAGS.grid, run)
  stage2 = parse_stage2(FLAGS.stage2, run)
  role = _role()
  search_dir = FLAGS.search_dir

  splits = None
  if role != "chief":  # the chief only serves the oracle
    try:
      splits = sweep.load_splits(run.data, {})
      models.build(run.model_name, run.with_data(splits.info).model)
    except ValueError as e:
      raise cli.UserError(str(e)) from None
    if stage2:
      _check_stage2_fits(run.with_data(splits.info), stage2)
  _check_same_search(search_dir, _search_flags({
      name: FLAGS[name].value for name in (
          "grid", "tuner", "max_trials", "objective", "max_bpp", "tradeoff",
          "hyperband_factor", "stage2")}, run))

  oracle = build_oracle(FLAGS.tuner, space, max_trials=FLAGS.max_trials,
                        max_epochs=run.train.epochs,
                        factor=FLAGS.hyperband_factor, seed=run.train.seed)
  tuner = TrainingTuner(oracle, search_dir, run,
                        objective=FLAGS.objective, max_bpp=FLAGS.max_bpp,
                        tradeoff=FLAGS.tradeoff, splits=splits,
                        stage2=stage2)
  if role == "chief":
    print(f"chief: serving the oracle on {os.environ['KERASTUNER_ORACLE_IP']}"
          f":{os.environ['KERASTUNER_ORACLE_PORT']} for {search_dir}",
          flush=True)
  try:
    tuner.search(verbose=0)
  except kt.errors.FatalError as e:
    if isinstance(e.__cause__, cli.UserError):
      raise e.__cause__ from None
    raise
  except KeyboardInterrupt:
    print(f"interrupted; rerun the same command to resume the search in "
          f"{search_dir}", file=sys.stderr)
    sys.exit(130)
  if role == "worker":
    print(f"worker {os.environ['KERASTUNER_TUNER_ID']}: no trials left; the "
          "chief writes the table", flush=True)
    return

  rows = trial_table(tuner.oracle, two_stage=bool(stage2))
  if not rows:
    print("no trials were run")
    return
  print(format_table(rows))
  write_table(os.path.join(search_dir, "trials.csv"), rows)
  best = [trial for trial in tuner.oracle.get_best_trials(1)
          if trial.status == "COMPLETED"]
  if not best:
    print(f"no trial completed; wrote {search_dir}/trials.csv")
    return
  best = best[0]
  row = _row(best, [], two_stage=bool(stage2))
  path = os.path.join(search_dir, "best.flags")
  write_best_flags(path, run, best, [
      f"The best trial ({best.trial_id}) of the search in {search_dir}, "
      f"--objective={FLAGS.objective}:",
      f"{'stage 2 ' if stage2 else ''}val_accuracy {row['val_accuracy']:.4f}"
      f", val_bpp {row['val_bpp']:.4f} (the model's estimate), "
      f"{_describe(best.hyperparameters.values)}",
      *(_stage2_header(row, path, tuner.trial_dir(best.trial_id),
                       FLAGS.stage2) if stage2 else [])])
  print(f"best: trial {best.trial_id} ({_describe(best.hyperparameters.values)}"
        f", score {best.score:.4f}); wrote {search_dir}/trials.csv and {path}")
  if FLAGS.objective == "budget" and row["val_bpp"] > FLAGS.max_bpp:
    print(f"no trial was within --max_bpp={FLAGS.max_bpp:g}: the best one "
          "over it is the most accurate for its excess rate (see "
          "objective_score)")


if __name__ == "__main__":
  cli.run(main, argv=specs.flagfiles_first(sys.argv), many_models=True)
