"""ModelDir: the one place that names a model dir's files, read without TF."""

import os

import pytest

from tfvaeclf.errors import ModelDirError
from tfvaeclf.layout import ModelDir


def test_paths_are_the_documented_layout(tmp_path):
  run = ModelDir(tmp_path)
  assert run.path == str(tmp_path)
  assert {name: os.path.relpath(path, tmp_path) for name, path in {
      "config": run.config_path, "summary": run.summary_path,
      "tables": run.tables_path, "checkpoints": run.checkpoint_dir,
      "history": run.history_path, "logs": run.logs_dir,
      "test": run.eval_path(), "validation": run.eval_path("validation"),
  }.items()} == {
      "config": "config.json", "summary": "model.json",
      "tables": "coder_tables.npz", "checkpoints": "checkpoints",
      "history": "history.csv", "logs": "logs", "test": "eval.json",
      "validation": "eval_validation.json"}


def test_an_empty_dir_says_what_it_lacks_in_one_line(tmp_path):
  run = ModelDir(tmp_path)
  assert not run.exists and not run.finished
  assert run.history() == [] and run.eval() is None
  with pytest.raises(ModelDirError, match="not a tfvaeclf model dir") as e:
    _ = run.config
  assert "\n" not in str(e.value)
  run.write_config({"model": "joint"})
  assert run.exists and run.config == {"model": "joint"}
  with pytest.raises(ModelDirError, match="has not finished"):
    _ = run.final_checkpoint


def test_an_unreadable_file_is_a_model_dir_error(tmp_path):
  run = ModelDir(tmp_path)
  with open(run.config_path, "w") as f:
    f.write("{not json")
  with pytest.raises(ModelDirError, match="config.json: cannot read it"):
    _ = run.config


def test_written_files_read_back(tmp_path):
  run = ModelDir(tmp_path / "run")
  run.write_summary(bytes.fromhex("00ff00ff00ff00ff"),
                    "/elsewhere/checkpoints/ckpt-3")
  assert run.finished
  assert run.summary == {"fingerprint": "00ff00ff00ff00ff",
                         "checkpoint": "ckpt-3"}
  assert run.final_checkpoint == os.path.join(run.checkpoint_dir, "ckpt-3")
  rows = [{"epoch": "0", "loss": "1.5"}, {"epoch": "1", "loss": "0.75"}]
  run.write_history(rows)
  assert run.history() == rows
  run.write_eval("validation", {"accuracy": 0.5})
  assert run.eval() is None
  assert run.eval("validation") == {"accuracy": 0.5}


def test_a_copy_of_the_state_leaves_outputs_out(tmp_path):
  run = ModelDir(tmp_path / "run")
  run.write_config({"model": "joint"})
  run.write_history([{"epoch": "0"}])
  run.write_eval("test", {"accuracy": 0.5})
  run.write_eval("validation", {"accuracy": 0.5})
  os.makedirs(run.checkpoint_dir)
  os.makedirs(os.path.join(run.logs_dir, "train"))
  copy = run.copy_state(tmp_path / "copy")
  assert sorted(os.listdir(copy.path)) == [
      "checkpoints", "config.json", "history.csv"]
  assert copy.config == run.config and copy.eval() is None
