"""The hyperparameter search: its grid, objective, resuming, best.flags,
two-stage trials and distributed mode, on real MNIST with tiny trials."""

import csv
import dataclasses
import os
import socket
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest

from tfvaeclf import cli, model_dir, models, specs, train
from tfvaeclf.experiments import search
from tfvaeclf.layout import ModelDir
from tests.conftest import MNIST_ARGS, SMALL_JOINT, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KT_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP",
          "KERASTUNER_ORACLE_PORT")


def _tiny_flagfile(directory, *extra, model=None):
  """A tiny model on 200 real MNIST digits, 1 epoch, 2 grid points: by
  default SMALL_JOINT; `model`, flags of another kind."""
  def joined(values):
    return ",".join(str(v) for v in values)
  model = model or [
      "--model=joint", f"--filters={joined(SMALL_JOINT['filters'])}",
      f"--latent_channels={SMALL_JOINT['latent_channels']}",
      f"--classifier_units={joined(SMALL_JOINT['classifier_units'])}",
      f"--lmbda={SMALL_JOINT['lmbda']}"]
  lines = [
      *model, f"--dataset={MNIST_ARGS['name']}",
      f"--validation_size={MNIST_ARGS['validation_size']}",
      f"--seed={MNIST_ARGS['seed']}", "--train_subset=200", "--epochs=1",
      "--batch_size=64", "--learning_rate=0.003", "--grid=kernel_size:3,5",
      *extra]
  path = os.path.join(directory, "tiny_search.flags")
  with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
  return path


def _run_search(argv):
  """search.main in-process through cli.run, as the shell would run it."""
  with flagsaver.flagsaver():
    with pytest.raises(SystemExit) as exit_info:
      cli.run(search.main, argv=["search", *argv])
  return exit_info.value.code


def _table(search_dir):
  with open(os.path.join(search_dir, "trials.csv"), newline="") as f:
    return list(csv.DictReader(f))


def _files(directory):
  """path -> mtime of every file under `directory`."""
  paths = [os.path.join(root, name)
           for root, _, names in os.walk(directory) for name in names]
  return {path: os.stat(path).st_mtime_ns for path in paths}


@pytest.fixture(autouse=True)
def _not_distributed(monkeypatch):
  for name in KT_ENV:
    monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def tiny_search(tmp_path_factory):
  """Runs the 2-trial search once; returns its search dir."""
  directory = tmp_path_factory.mktemp("search")
  flagfile = _tiny_flagfile(str(directory))
  search_dir = str(directory / "run")
  code = _run_search([f"--flagfile={flagfile}", f"--search_dir={search_dir}"])
  assert code in (0, None)
  return flagfile, search_dir


def test_seed_grid_config_enumerates_36_distinct_trials(tmp_path):
  path = os.path.join(REPO, "configs", "mnist_joint_search.flags")
  with flagsaver.flagsaver():
    flags.FLAGS(["search", f"--flagfile={path}"])
    assert flags.FLAGS.tuner == "grid"
    run = specs.from_flags(flags.FLAGS)
    space = search.parse_grid(flags.FLAGS.grid, run)
  # conv_layers=4 repeats the last base width: 32,64 -> 32,64,64,64.
  trial = search.trial_spec(run, {"conv_layers": 4, "batch_size": 32,
                                  "seed": 3}, "trials/0")
  assert trial.model.filters == (32, 64, 64, 64)
  assert (trial.train.batch_size, trial.train.seed, trial.data.seed,
          trial.model_dir) == (32, 3, 3, "trials/0")
  # The base is untouched, and the trial differs from it in these alone.
  assert run.model.filters == (32, 64) and run.train.batch_size == 64
  assert trial == dataclasses.replace(
      run, model_dir="trials/0",
      model=dataclasses.replace(run.model, filters=(32, 64, 64, 64)),
      train=dataclasses.replace(run.train, batch_size=32, seed=3),
      data=dataclasses.replace(run.data, seed=3))
  oracle = search.build_oracle("grid", space)
  oracle._set_project_dir(str(tmp_path), "tuner")
  points = []
  while True:
    trial = oracle.create_trial("tuner0")
    if trial.status != "RUNNING":
      break
    points.append(tuple(sorted(trial.hyperparameters.values.items())))
    oracle.update_trial(trial.trial_id, {"score": 0.})
    trial.status = "COMPLETED"
    oracle.end_trial(trial)
  assert trial.status == "STOPPED"
  assert len(points) == len(set(points)) == 3 * 3 * 4
  assert {dict(p)["batch_size"] for p in points} == {32, 64, 128}
  assert {dict(p)["kernel_size"] for p in points} == {3, 4, 5}
  assert {dict(p)["conv_layers"] for p in points} == {2, 3, 4, 5}


def test_budget_search_config_parses(tmp_path):
  path = os.path.join(REPO, "configs",
                      "fashion_mnist_joint_budget_search.flags")
  with flagsaver.flagsaver():
    flags.FLAGS(["search", f"--flagfile={path}"])
    assert (flags.FLAGS.objective, flags.FLAGS.tuner) == ("budget",
                                                          "hyperband")
    space = search.parse_grid(flags.FLAGS.grid,
                              specs.from_flags(flags.FLAGS))
    oracle = search.build_oracle("hyperband", space,
                                 max_epochs=flags.FLAGS.epochs)
  assert sorted(hp.name for hp in space.space) == ["kernel_size", "lmbda"]
  oracle._set_project_dir(str(tmp_path), "tuner")
  trial = oracle.create_trial("tuner0")
  assert trial.hyperparameters.values["tuner/epochs"] >= 1


@pytest.mark.slow
def test_tiny_search_writes_table_and_best_flags(tiny_search):
  _, search_dir = tiny_search
  rows = _table(search_dir)
  assert [row["kernel_size"] for row in rows] == ["3", "5"]
  assert {row["status"] for row in rows} == {"completed"}
  for row in rows:
    assert 0. <= float(row["val_accuracy"]) <= 1.
    assert float(row["val_bpp"]) > 0.
    assert float(row["train_seconds"]) > 0.
    # Each trial is an ordinary, finished model dir.
    loaded = model_dir.load(os.path.join(search_dir, "trials", row["trial"]))
    assert loaded.config["model_config"]["kernel_size"] == int(
        row["kernel_size"])
  best = max(rows, key=lambda row: float(row["score"]))
  with open(os.path.join(search_dir, "best.flags")) as f:
    text = f.read()
  assert f"--kernel_size={best['kernel_size']}\n" in text
  assert "--train_subset=200\n" in text and "--grid" not in text


@pytest.mark.slow
def test_rerun_skips_finished_trials(tiny_search, monkeypatch, capsys):
  flagfile, search_dir = tiny_search
  before = _files(os.path.join(search_dir, "trials"))

  def must_not_train(*args, **kwargs):
    raise AssertionError("a finished trial was trained again")
  monkeypatch.setattr(train, "run_training", must_not_train)
  code = _run_search([f"--flagfile={flagfile}", f"--search_dir={search_dir}"])
  assert code in (0, None)
  assert _files(os.path.join(search_dir, "trials")) == before
  assert len(_table(search_dir)) == 2
  assert "completed" in capsys.readouterr().out


@pytest.mark.slow
def test_rerun_with_other_search_flags_is_refused(tiny_search, capsys):
  flagfile, search_dir = tiny_search
  code, _, err = run_cli(search.main, [
      f"--flagfile={flagfile}", f"--search_dir={search_dir}",
      "--grid=conv_layers:1,2"], capsys)
  assert code == 2
  assert err.count("\n") == 1 and "other flags (grid)" in err


@pytest.mark.slow
def test_best_flags_train_as_they_are(tiny_search, tmp_path, capsys):
  _, search_dir = tiny_search
  best_flags = os.path.join(search_dir, "best.flags")
  code, out, _ = run_cli(train.main, [
      f"--flagfile={best_flags}", f"--model_dir={tmp_path}"], capsys)
  assert code in (0, None), out
  best = max(_table(search_dir), key=lambda row: float(row["score"]))
  config = model_dir.load(str(tmp_path)).config
  assert config["model_config"]["kernel_size"] == int(best["kernel_size"])
  assert config["training"]["train_subset"] == 200


def test_budget_objective_ranks_over_budget_below_within_budget():
  within = search.objective_score("budget", 0.50, 0.10, max_bpp=0.1)
  over = search.objective_score("budget", 0.99, 0.11, max_bpp=0.1)
  far_over = search.objective_score("budget", 0.99, 0.50, max_bpp=0.1)
  worst_within = search.objective_score("budget", 0.0, 0.01, max_bpp=0.1)
  assert within > worst_within > over > far_over
  # All over budget: accuracy still counts, discounted by the excess rate.
  accurate = search.objective_score("budget", 0.400, 0.12, max_bpp=0.1)
  cheap = search.objective_score("budget", 0.207, 0.11, max_bpp=0.1)
  assert accurate > cheap
  assert search.objective_score("budget", 0.4, 0.2, max_bpp=0.1) == (
      pytest.approx(-0.8))
  assert search.objective_score("accuracy", 0.9, 5.) == 0.9
  assert search.objective_score("lagrangian", 0.9, 0.5,
                                tradeoff=0.2) == pytest.approx(0.8)


@pytest.mark.parametrize("args,message", [
    (["--grid=kernel_size"], "expected NAME:VALUE"),
    (["--grid=kernel_size:3,x"], "kernel_size"),
    (["--grid=kernel_size:3,3"], "repeated"),
    (["--grid=kernel_sise:3,5"], "not a hyperparameter of model joint"),
    (["--grid=filters:8,16"], "list flags"),
    (["--grid=conv_layers:0,2"], "conv_layers"),
    (["--grid=kernel_size:3,5", "--tuner=bayes"], "unknown --tuner=bayes"),
    (["--grid=kernel_size:3,5", "--objective=budget"], "--max_bpp"),
    ([], "nothing to search"),
])
def test_bad_flags_are_one_line_errors(args, message, tmp_path, capsys):
  code, _, err = run_cli(search.main, [
      "--model=joint", f"--search_dir={tmp_path}", *args], capsys)
  assert code == 2
  assert err.startswith("error: ") and err.count("\n") == 1
  assert message in err


# A small beta-VAE whose trials train a selu5 head on the frozen VAE.
TINY_VAE = ["--model=beta_vae", "--filters=8,16", "--latent_dim=8"]
STAGE2 = ["--stage2=head=selu5", "--stage2=learning_rate=0.01"]


@pytest.fixture(scope="module")
def two_stage_search(tmp_path_factory):
  """The 2-trial two-stage search, killed before the kernel_size=5 trial's
  stage 2 and rerun: (flagfile, search dir, that trial's stage-1 files
  before the rerun)."""
  directory = tmp_path_factory.mktemp("two_stage")
  flagfile = _tiny_flagfile(str(directory), *STAGE2, model=TINY_VAE)
  search_dir = str(directory / "run")
  argv = [f"--flagfile={flagfile}", f"--search_dir={search_dir}"]
  real = train.run_training

  def killed_in_stage2(run, *args, **kwargs):
    if run.train.freeze_encoder_from and run.model.kernel_size == 5:
      raise KeyboardInterrupt
    return real(run, *args, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "run_training", killed_in_stage2)
    assert _run_search(argv) == 130
  stage1 = os.path.join(search_dir, "trials", "1")
  assert ModelDir(stage1).finished  # killed after stage 1
  assert not os.path.exists(os.path.join(stage1, search.STAGE2_DIR))
  before = _files(ModelDir(stage1).checkpoint_dir)
  assert _run_search(argv) in (0, None)
  return flagfile, search_dir, before


def _part_weights(loaded):
  return {name: [v.numpy() for v in getattr(loaded.model, name).variables]
          for name in loaded.model.PRETRAINED_PARTS}


@pytest.mark.slow
def test_two_stage_trials_score_the_head_on_the_frozen_encoder(
    two_stage_search):
  _, search_dir, _ = two_stage_search
  rows = _table(search_dir)
  assert [row["kernel_size"] for row in rows] == ["3", "5"]
  for row in rows:
    assert row["status"] == "completed"
    assert (row["epochs"], row["stage2_epochs"]) == ("1", "1")
    first = os.path.join(search_dir, "trials", row["trial"])
    second = os.path.join(first, search.STAGE2_DIR)
    stage1, stage2 = model_dir.load(first), model_dir.load(second)
    assert stage1.config["model_config"]["classifier"] == "mlp2"
    assert stage2.config["model_config"]["classifier"] == "selu5"
    assert stage2.config["training"]["learning_rate"] == 0.01
    assert stage2.config["training"]["pretrained"] == {
        "dir": os.path.abspath(first), "fingerprint": stage1.fingerprint.hex()}
    # Stage 2 kept stage 1's encoder, decoder and coder as they were.
    frozen, trained = _part_weights(stage1), _part_weights(stage2)
    assert sorted(frozen) == ["coder", "decoder", "encoder"]
    for name, weights in frozen.items():
      for a, b in zip(weights, trained[name], strict=True):
        np.testing.assert_array_equal(a, b)
    # The score is stage 2's last validation accuracy, the rate stage 1's
    # (which the frozen stage 2 shares).
    last1 = ModelDir(first).history()[-1]
    last2 = ModelDir(second).history()[-1]
    assert float(row["val_accuracy"]) == pytest.approx(
        float(last2["val_accuracy"]))
    assert float(row["score"]) == float(row["val_accuracy"])
    assert float(row["stage1_val_accuracy"]) == pytest.approx(
        float(last1["val_accuracy"]))
    assert float(row["val_bpp"]) == pytest.approx(float(last1["val_bpp"]))
    assert float(last2["val_bpp"]) == pytest.approx(float(last1["val_bpp"]),
                                                    rel=1e-4)
    assert float(row["train_seconds"]) > float(last1["seconds"])
  with open(os.path.join(search_dir, "best.flags")) as f:
    text = f.read()
  best = max(rows, key=lambda row: float(row["score"]))
  assert "stage 2 val_accuracy" in text
  first_accuracy = float(best["stage1_val_accuracy"])
  assert f"This is stage 1 (val_accuracy {first_accuracy:.4f})" in text
  assert (f"--freeze_encoder_from={search_dir}/trials/{best['trial']} "
          "--head=selu5 --learning_rate=0.01 --model_dir=") in text
  assert "--head=mlp2\n" in text and "--stage2" not in text


@pytest.mark.slow
def test_killed_two_stage_search_resumes_without_retraining_stage1(
    two_stage_search, monkeypatch):
  flagfile, search_dir, before = two_stage_search
  stage1 = ModelDir(os.path.join(search_dir, "trials", "1"))
  # Its stage 1 had finished when the search was killed: only stage 2 ran.
  assert _files(stage1.checkpoint_dir) == before
  assert len(stage1.history()) == 1

  def must_not_train(*args, **kwargs):
    raise AssertionError("a finished trial was trained again")
  monkeypatch.setattr(train, "run_training", must_not_train)
  everything = _files(os.path.join(search_dir, "trials"))
  code = _run_search([f"--flagfile={flagfile}", f"--search_dir={search_dir}"])
  assert code in (0, None)
  assert _files(os.path.join(search_dir, "trials")) == everything


@pytest.mark.parametrize("args,message", [
    (["--model=classifier", "--stage2=epochs=2"],
     "model classifier has no encoder to freeze"),
    (["--model=beta_vae", "--tuner=hyperband", "--stage2=head=selu5"],
     "hyperband"),
    (["--model=beta_vae", "--stage2=head"], "expected NAME=VALUE"),
    (["--model=beta_vae", "--stage2=head=mlp9"], "head"),
    (["--model=beta_vae", "--stage2=conv_layers=3"],
     "not a hyperparameter of model beta_vae"),
    (["--model=beta_vae", "--stage2=freeze_encoder_from=x"],
     "not a hyperparameter of model beta_vae"),
    (["--model=beta_vae", "--stage2=epochs=2", "--stage2=epochs=3"],
     "given twice"),
    (["--model=beta_vae", "--stage2=latent_dim=4"],
     "reshapes the encoder, decoder, coder"),
])
def test_bad_stage2_flags_are_one_line_errors(args, message, tmp_path,
                                              capsys):
  code, _, err = run_cli(search.main, [
      f"--search_dir={tmp_path}", "--grid=batch_size:16,32",
      f"--validation_size={MNIST_ARGS['validation_size']}", *args], capsys)
  assert code == 2
  assert err.startswith("error: ") and err.count("\n") == 1
  assert message in err


def test_beta_vae_grid_config_is_two_stage_over_36_valid_cells():
  path = os.path.join(REPO, "configs", "mnist_beta_vae_search.flags")
  with flagsaver.flagsaver():
    flags.FLAGS(["search", f"--flagfile={path}"])
    run = specs.from_flags(flags.FLAGS)
    space = search.parse_grid(flags.FLAGS.grid, run)
    stage2 = search.parse_stage2(flags.FLAGS.stage2, run)
  assert stage2["head"] == "selu5" and run.train.train_subset
  assert {hp.name: hp.values for hp in space.space} == {
      "batch_size": [32, 64, 128], "kernel_size": [3, 4, 5],
      "conv_layers": [2, 3, 4, 5]}
  run = dataclasses.replace(run, model=dataclasses.replace(
      run.model, image_shape=(28, 28, 1)))
  # Every cell builds at 28x28: no trial fails for its shape.
  for kernel in (3, 4, 5):
    for layers in (2, 3, 4, 5):
      trial = search.trial_spec(run, {"kernel_size": kernel,
                                      "conv_layers": layers}, "trials/0")
      models.build(trial.model_name, trial.model)
      second = search.stage2_spec(trial, stage2)
      assert second.train.freeze_encoder_from == "trials/0"
      assert second.model_dir == os.path.join("trials/0", search.STAGE2_DIR)
      assert second.model.filters == trial.model.filters


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_distributed_chief_and_worker(tmp_path):
  flagfile = _tiny_flagfile(str(tmp_path))
  search_dir = str(tmp_path / "run")
  env = {name: value for name, value in os.environ.items()
         if name not in KT_ENV}
  env.update(TF_CPP_MIN_LOG_LEVEL="3", KERASTUNER_ORACLE_IP="127.0.0.1",
             KERASTUNER_ORACLE_PORT=str(_free_port()))
  command = [sys.executable, "-m", "tfvaeclf.experiments.search",
             f"--flagfile={flagfile}", f"--search_dir={search_dir}"]
  processes = {
      tuner_id: subprocess.Popen(
          command, cwd=REPO, env=dict(env, KERASTUNER_TUNER_ID=tuner_id),
          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for tuner_id in ("chief", "tuner0")}
  outputs = {}
  try:
    for tuner_id, process in processes.items():
      outputs[tuner_id] = process.communicate(timeout=240)
  finally:
    for process in processes.values():
      if process.poll() is None:
        process.kill()
        process.communicate()
  for tuner_id, process in processes.items():
    assert process.returncode == 0, (tuner_id, outputs.get(tuner_id))
  chief_out, worker_out = outputs["chief"][0], outputs["tuner0"][0]
  assert "trial 0:" in worker_out and "trial 1:" in worker_out
  assert "no trials left" in worker_out
  rows = _table(search_dir)
  assert [row["status"] for row in rows] == ["completed", "completed"]
  assert "best: trial" in chief_out
  for row in rows:  # the worker trained into the shared search dir
    model_dir.load(os.path.join(search_dir, "trials", row["trial"]))
  assert os.path.exists(os.path.join(search_dir, "best.flags"))
