"""Which `tf.distribute` strategy training runs under, and who writes files.

    default       no distribution: `tf.distribute.get_strategy()`
    mirrored      `MirroredStrategy`: one replica per visible GPU (or the
                  CPU), synchronous, on this machine
    multi_worker  `MultiWorkerMirroredStrategy`: the same on every machine
                  named in the `TF_CONFIG` environment variable

Training scales out on TensorFlow's own engine rather than a scheduler of
its own: the model, optimizer and checkpoint are created under
`strategy.scope()`, Keras `fit` splits each global batch over the replicas,
and the checkpoints stay strategy-agnostic, so a run started under one
strategy resumes under any other.

`TF_CONFIG` is read here, not left to TensorFlow, because a missing or
malformed one otherwise silently trains alone (or fails deep inside gRPC);
`make_strategy` checks it and says in one line what is wrong.

With several workers every one of them trains and saves checkpoints (saving
is a collective operation), but only the chief's files are the model dir:
the others save into a scratch dir of their own (`scratch_dir`), the pattern
of TensorFlow's multi-worker tutorial.
"""

import json
import os
import tempfile

import tensorflow as tf

from tfvaeclf.errors import ClusterConfigError

__all__ = ["STRATEGIES", "ClusterConfigError", "make_strategy", "is_chief",
           "scratch_dir", "shard_by_data"]

STRATEGIES = ("default", "mirrored", "multi_worker")


def _check_tf_config(text):
  """Parses TF_CONFIG; returns (task type, task index) or raises."""
  if not text:
    raise ClusterConfigError(
        '--strategy=multi_worker needs the TF_CONFIG environment variable, '
        'e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
        '"task": {"type": "worker", "index": 0}}')
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise ClusterConfigError(f"TF_CONFIG is not JSON: {e}") from None
  cluster = config.get("cluster") if isinstance(config, dict) else None
  task = config.get("task") if isinstance(config, dict) else None
  if not isinstance(cluster, dict) or not cluster:
    raise ClusterConfigError(
        'TF_CONFIG needs a "cluster" mapping job names ("chief", "worker") '
        'to lists of "host:port"')
  for job, addresses in cluster.items():
    if job not in ("chief", "worker", "evaluator"):
      raise ClusterConfigError(
          f'TF_CONFIG: job "{job}" is not one multi_worker can use '
          '(chief, worker)')
    if (not isinstance(addresses, list) or not addresses or not all(
        isinstance(a, str) and a.rpartition(":")[2].isdigit()
        for a in addresses)):
      raise ClusterConfigError(
          f'TF_CONFIG: cluster "{job}" must be a non-empty list of '
          f'"host:port", not {addresses!r}')
  if len(cluster.get("chief", ())) > 1:
    raise ClusterConfigError("TF_CONFIG: a cluster has at most one chief")
  if (not isinstance(task, dict) or task.get("type") not in cluster
      or not isinstance(task.get("index"), int)
      or not 0 <= task["index"] < len(cluster[task["type"]])):
    raise ClusterConfigError(
        'TF_CONFIG needs a "task" {"type": ..., "index": ...} naming this '
        f'process\'s place in the cluster ({", ".join(cluster)}), '
        f'not {task!r}')
  if task["type"] == "evaluator":
    raise ClusterConfigError(
        "TF_CONFIG: an evaluator task does not train; run "
        "python -m tfvaeclf.evaluate on the finished model dir instead")
  return task["type"], task["index"]


def make_strategy(name, environ=None):
  """The strategy `name` (one of STRATEGIES) for this process.

  Call it first, before anything else touches TensorFlow: both mirrored
  strategies must see the devices (and multi_worker must configure its
  collectives) before the runtime starts. Raises ClusterConfigError for a
  bad TF_CONFIG under multi_worker.
  """
  environ = os.environ if environ is None else environ
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    _check_tf_config(environ.get("TF_CONFIG"))
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise ValueError(f"strategy must be one of {STRATEGIES}, not {name!r}")


def is_chief(strategy):
  """Whether this process writes the model dir.

  True except on a multi-worker cluster's non-chief workers (the chief is
  the "chief" task, or worker 0 when there is none), as TensorFlow decides
  it for checkpoints.
  """
  return strategy.extended.should_checkpoint


def scratch_dir(strategy):
  """A fresh dir for what a non-chief worker must write but nobody reads.

  The caller removes it when training ends; it is outside the model dir,
  so a killed worker leaves nothing there.
  """
  task_id = getattr(strategy.cluster_resolver, "task_id", 0)
  return tempfile.mkdtemp(prefix=f"tfvaeclf-worker{task_id}-")


def shard_by_data(dataset):
  """`dataset`, to be split over workers element by element.

  Our datasets live in memory (no files to split), so the default AUTO
  policy would only fall back to DATA after a warning. Every worker builds
  the same pipeline with the same shuffle seed and keeps its own part of
  each global batch; on one machine the option does nothing.
  """
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return dataset.with_options(options)
