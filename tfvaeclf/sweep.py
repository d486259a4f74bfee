"""Train-and-evaluate many settings of one model kind: what sweeps share.

A sweep command (`tfvaeclf.rdc_sweep`, `tfvaeclf.split_sweep`) reads the
training flags of `tfvaeclf.train` once, then for each point of its curve
sets a few of them (`flags_with`) and calls `train_and_evaluate` into a
model dir of its own. A point whose dir has an `eval.json` is done and is
read back; an unfinished one resumes training where it stopped. So a
killed sweep, rerun, repeats nothing it finished.
"""

import copy
import csv
import json
import os

from absl import flags
import tensorflow as tf

from tfvaeclf import data, evaluate, fileio, model_dir as model_dir_lib
from tfvaeclf import train

__all__ = ["dataset_key", "flags_with", "load_splits", "train_and_evaluate",
           "write_csv"]

FLAGS = flags.FLAGS
EVAL_FILE = "eval.json"


def flags_with(values, flag_values=FLAGS):
  """A copy of the parsed `flag_values` with `values` (name -> value) set."""
  result = copy.deepcopy(flag_values)
  for name, value in values.items():
    result[name].value = value
  return result


def dataset_key(dataset):
  """The key of `data.load` arguments in a `load_splits` cache."""
  return json.dumps(dataset, sort_keys=True)


def load_splits(dataset, cache):
  """`data.load(**dataset)`, loaded once per distinct dataset in `cache`."""
  key = dataset_key(dataset)
  if key not in cache:
    cache[key] = data.load(**dataset)
  return cache[key]


def train_and_evaluate(directory, model_name, settings, *, max_examples=None,
                       splits_cache=None, progress=False):
  """Trains `model_name` with the flags `settings` into `directory` and
  evaluates it on the test split (`max_examples` of it); returns the
  results, also written to `directory/eval.json`. A finished point is only
  read back.

  ValueError, in one line, for settings the kind refuses.
  """
  path = os.path.join(directory, EVAL_FILE)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  tf.keras.backend.clear_session()  # one process trains many models
  dataset = train.dataset_from_flags(settings)
  splits = load_splits(dataset, {} if splits_cache is None else splits_cache)
  config = train.model_config_from_flags(model_name, splits.info, settings)
  train.run_training(directory, model_name, config, splits, dataset,
                     **train.training_kwargs_from_flags(settings),
                     verbose=0)
  loaded = model_dir_lib.load(directory)
  test = splits.test.take(max_examples) if max_examples else splits.test
  results = {"model": model_name, "split": "test",
             "data_source": splits.info.source,
             **evaluate.evaluate(loaded, test, settings.batch_size,
                                 progress=progress)}
  fileio.write_json(path, results)
  return results


def write_csv(path, rows):
  """Rows (dicts) -> a CSV with the union of their keys, written whole."""
  fields = list(dict.fromkeys(key for row in rows for key in row))
  with fileio.atomic_writer(path, "w") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
