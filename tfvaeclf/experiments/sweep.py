"""Train-and-evaluate many settings of one model kind: what sweeps share.

A sweep command (`rdc_sweep`, `split_sweep`, `frontier` of this package)
reads the training flags of `tfvaeclf.train` once into a `specs.RunSpec`,
then for each point of its curve derives a variant (`dataclasses.replace`)
with a model dir of its own and calls `train_and_evaluate`. A point whose
dir has an `eval.json` is done and is read back; an unfinished one resumes
training where it stopped. So a killed sweep, rerun, repeats nothing it
finished.
"""

import csv
import dataclasses
import json
import os
import sys

import tensorflow as tf

from tfvaeclf import data, evaluate, fileio, model_dir as model_dir_lib
from tfvaeclf import train

__all__ = ["dataset_key", "load_splits", "train_and_evaluate", "write_csv",
           "finish"]

def dataset_key(data_spec):
  """The key of a `specs.DataSpec` in a `load_splits` cache."""
  return json.dumps(dataclasses.asdict(data_spec), sort_keys=True)


def load_splits(data_spec, cache):
  """`data.load` of a `specs.DataSpec`, once per distinct one in `cache`."""
  key = dataset_key(data_spec)
  if key not in cache:
    cache[key] = data.load(**dataclasses.asdict(data_spec))
  return cache[key]


def train_and_evaluate(run, *, max_examples=None, splits_cache=None,
                       progress=False):
  """Trains `run` (a `specs.RunSpec`) into its model dir and evaluates it
  on the test split (`max_examples` of it); returns the results, also
  written to the dir's eval.json. A finished point is only read back.

  ValueError, in one line, for settings the kind refuses.
  """
  layout = model_dir_lib.ModelDir(run.model_dir)
  if layout.eval() is not None:
    return layout.eval()
  tf.keras.backend.clear_session()  # one process trains many models
  splits = load_splits(run.data,
                       {} if splits_cache is None else splits_cache)
  train.run_training(run.with_data(splits.info), splits, verbose=0)
  loaded = model_dir_lib.load(run.model_dir)
  test = splits.test.take(max_examples) if max_examples else splits.test
  results = {"model": run.model_name, "split": "test",
             "data_source": splits.info.source,
             **evaluate.evaluate(loaded, test, run.train.batch_size,
                                 progress=progress)}
  layout.write_eval("test", results)
  return results


def write_csv(path, rows):
  """Rows (dicts) -> a CSV with the union of their keys, written whole."""
  fields = list(dict.fromkeys(key for row in rows for key in row))
  with fileio.atomic_writer(path, "w") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)


def finish(out, rows, figure, failed):
  """Writes `rows` to `out`/points.csv beside the plot `figure` written
  there, says so, and exits with code 3 naming the points (dirs) in
  `failed` whose training diverged."""
  write_csv(os.path.join(out, "points.csv"), rows)
  print(f"wrote {len(rows)} points to {out}/points.csv and {figure}")
  if failed:
    print(f"error: {len(failed)} points diverged: {', '.join(failed)}",
          file=sys.stderr)
    sys.exit(3)
