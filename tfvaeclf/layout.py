"""The model dir's layout: `ModelDir` alone names its files.

    config.json        model kind, its config, the dataset, its class names,
                       the training flags and how a file becomes the
                       model's input ("preprocessing", `imageio`)
    checkpoints/       per-epoch training checkpoints (model + optimizer)
    history.csv        per-epoch metrics, a row per finished epoch
    logs/              TensorBoard
    coder_tables.npz   the frozen integer coding tables (written at the end)
    model.json         fingerprint and the checkpoint the tables belong to
    eval.json          `python -m tfvaeclf.evaluate` on the test split;
                       eval_<split>.json on another split
    board.json         what the board runs and how well: the int8 edge
                       model's bytes, multiply-accumulates and TFLM arena,
                       its accuracy (`python -m tfvaeclf.experiments.board`)

A dir without `model.json` is a training run that has not finished; rerunning
training resumes it.

Standard library only, so the report reads model dirs without TensorFlow;
`tfvaeclf.model_dir` builds, finishes and loads the models they hold.
"""

import csv
import json
import os
import shutil

from tfvaeclf import fileio
from tfvaeclf.errors import ModelDirError

__all__ = ["ModelDir"]


class ModelDir:
  """One model dir, by path; nothing is read until asked for."""

  CONFIG = "config.json"
  # config.json's key for `imageio.Preprocessing.record()`; a dir from
  # before it has none.
  PREPROCESSING = "preprocessing"
  SUMMARY = "model.json"
  TABLES = "coder_tables.npz"
  CHECKPOINTS = "checkpoints"
  HISTORY = "history.csv"
  LOGS = "logs"
  BOARD = "board.json"
  # What training writes besides its state: a copy to train further omits it.
  _OUTPUTS = (LOGS, "eval*.json", BOARD)

  def __init__(self, path):
    self.path = os.fspath(path)
    self.config_path = self._file(self.CONFIG)
    self.summary_path = self._file(self.SUMMARY)
    self.tables_path = self._file(self.TABLES)
    self.checkpoint_dir = self._file(self.CHECKPOINTS)
    self.history_path = self._file(self.HISTORY)
    self.logs_dir = self._file(self.LOGS)
    self.board_path = self._file(self.BOARD)

  def __repr__(self):
    return f"ModelDir({self.path!r})"

  def _file(self, name):
    return os.path.join(self.path, name)

  def eval_path(self, split="test"):
    return self._file("eval.json" if split == "test" else
                      f"eval_{split}.json")

  # --- what the dir holds ---------------------------------------------------

  @property
  def exists(self):
    """Whether training has started here (config.json is written first)."""
    return os.path.isfile(self.config_path)

  @property
  def finished(self):
    """Whether training finished: model.json is written last."""
    return os.path.isfile(self.summary_path)

  def _read_json(self, path, missing_message):
    if not os.path.exists(path):
      raise ModelDirError(missing_message)
    try:
      with open(path, encoding="utf-8") as f:
        return json.load(f)
    except (OSError, ValueError) as e:
      raise ModelDirError(f"{path}: cannot read it ({e})") from None

  @property
  def config(self):
    """The contents of config.json; ModelDirError if it has none."""
    return self._read_json(
        self.config_path,
        f"{self.path} is not a tfvaeclf model dir (no {self.CONFIG}); "
        "train one with: python -m tfvaeclf.train --model_dir=...")

  def write_config(self, config):
    fileio.write_json(self.config_path, config)

  @property
  def summary(self):
    """model.json: {"fingerprint": hex, "checkpoint": name}; ModelDirError
    if training has not finished."""
    return self._read_json(
        self.summary_path,
        f"training in {self.path} has not finished; rerun "
        "python -m tfvaeclf.train with the same flags to resume it")

  def write_summary(self, fingerprint, checkpoint_path):
    """Marks training finished, at `checkpoint_path`'s weights."""
    fileio.write_json(self.summary_path, {
        "fingerprint": fingerprint.hex(),
        "checkpoint": os.path.basename(checkpoint_path),
    })

  @property
  def final_checkpoint(self):
    """The path of the checkpoint the finished model was frozen from."""
    return os.path.join(self.checkpoint_dir, self.summary["checkpoint"])

  def history(self):
    """history.csv's rows as {column: text}, oldest first; [] before the
    first epoch ends."""
    if not os.path.exists(self.history_path):
      return []
    with open(self.history_path, newline="", encoding="utf-8") as f:
      return list(csv.DictReader(f))

  def write_history(self, rows):
    """Replaces history.csv with `rows` (dicts with the same keys)."""
    with fileio.atomic_writer(self.history_path, "w") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)

  def eval(self, split="test"):
    """The results `write_eval` stored for `split`, or None."""
    path = self.eval_path(split)
    if not os.path.exists(path):
      return None
    return self._read_json(path, "")

  def write_eval(self, split, results):
    fileio.write_json(self.eval_path(split), results)

  def board(self):
    """What `write_board` stored (the edge budget), or None."""
    if not os.path.exists(self.board_path):
      return None
    board = self._read_json(self.board_path, "")
    if not isinstance(board, dict):
      raise ModelDirError(f"{self.board_path}: not a board.json (a JSON "
                          "object of the board's figures)")
    return board

  def write_board(self, results):
    fileio.write_json(self.board_path, results)

  def copy_state(self, destination):
    """Copies what training resumes from (not logs or evaluations) to a new
    dir `destination`; returns its ModelDir."""
    shutil.copytree(self.path, destination,
                    ignore=shutil.ignore_patterns(*self._OUTPUTS))
    return ModelDir(destination)
