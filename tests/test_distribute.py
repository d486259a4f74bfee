"""Training under tf.distribute: mirrored, multi-worker, and resuming across.

Strategies with several replicas need the devices (or the cluster) set up
before TensorFlow starts, so they run in subprocesses: one with two logical
CPUs for MirroredStrategy, two local workers for MultiWorkerMirroredStrategy.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import distribute, model_dir, models, train
from tests.conftest import SMALL_JOINT, run_cli, run_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUBSET, BATCH = 256, 32  # per replica: 64 images a step on two replicas
TIMEOUT = 600  # seconds for any one subprocess, on 2 busy cores


def _env(**extra):
  env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
  return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def _train(directory, splits, epochs):
  config = models.get("joint").Config(**SMALL_JOINT)
  return train.run_training(run_spec(
      directory, "joint", config, epochs=epochs, batch_size=BATCH,
      learning_rate=3e-3, seed=0, train_subset=SUBSET), splits, verbose=0)


def _history(directory):
  with open(os.path.join(directory, "history.csv")) as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


def _latest(directory):
  return os.path.basename(tf.train.latest_checkpoint(
      os.path.join(directory, "checkpoints")))


# -- TF_CONFIG ----------------------------------------------------------------

_WORKERS = {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]}


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{oops", "TF_CONFIG is not JSON"),
    (json.dumps({"task": {"type": "worker", "index": 0}}),
     'needs a "cluster"'),
    (json.dumps({"cluster": {"worker": ["127.0.0.1"]},
                 "task": {"type": "worker", "index": 0}}), '"host:port"'),
    (json.dumps({"cluster": {"ps": ["127.0.0.1:2222"]},
                 "task": {"type": "ps", "index": 0}}), 'job "ps"'),
    (json.dumps({"cluster": _WORKERS}), 'needs a "task"'),
    (json.dumps({"cluster": _WORKERS, "task": {"type": "worker",
                                               "index": 2}}),
     'needs a "task"'),
    (json.dumps({"cluster": _WORKERS, "task": {"type": "chief",
                                               "index": 0}}),
     'needs a "task"'),
])
def test_a_bad_tf_config_is_refused_in_one_line(tf_config, message):
  environ = {} if tf_config is None else {"TF_CONFIG": tf_config}
  with pytest.raises(distribute.ClusterConfigError, match=message) as e:
    distribute.make_strategy("multi_worker", environ)
  assert "\n" not in str(e.value)


def test_the_cli_reports_a_missing_tf_config(tmp_path, capsys, monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  code, _, err = run_cli(train.main, [
      "--strategy=multi_worker", f"--model_dir={tmp_path / 'run'}"], capsys)
  assert code == 2
  assert err.startswith("error: --strategy=multi_worker needs the TF_CONFIG")
  assert not os.path.exists(tmp_path / "run")


def test_the_default_strategy_is_the_current_one():
  assert distribute.make_strategy("default") is tf.distribute.get_strategy()
  assert distribute.is_chief(tf.distribute.get_strategy())


# -- MirroredStrategy on two logical CPUs -------------------------------------

# Runs in a fresh process: the CPU must be split before TensorFlow starts.
_MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfvaeclf import data, models, train
    from tests.conftest import MNIST_ARGS, SMALL_JOINT, run_spec

    default_first, mirrored_first, BATCH, SUBSET = sys.argv[1:]
    BATCH, SUBSET = int(BATCH), int(SUBSET)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    splits = data.load(**MNIST_ARGS)

    # (1) Two SGD steps on the same two global batches of 64, from the same
    # weights: one device vs. two replicas of 32. lmbda=0: the rate term's
    # noise is drawn per replica, so only the rest is deterministic. SGD,
    # not Adam: Adam's first steps hardly see the gradients' scale.
    config = models.get("joint").Config(**{**SMALL_JOINT, "lmbda": 0.})
    batches = data.pipeline(splits.train.take(2 * 2 * BATCH), 2 * BATCH)
    start = None
    result = {}
    for name, strategy in (("single", tf.distribute.get_strategy()),
                           ("mirrored", mirrored)):
      with strategy.scope():
        model = models.build("joint", config)
        model.build_from_config()
        if start is None:
          start = [v.numpy() for v in model.trainable_variables]
        for variable, value in zip(model.trainable_variables, start):
          variable.assign(value)
        model.compile(optimizer=tf.keras.optimizers.SGD(0.5))
      losses = []
      model.fit(batches, verbose=0, callbacks=[
          tf.keras.callbacks.LambdaCallback(on_train_batch_end=(
              lambda batch, logs: losses.append(float(logs["loss"]))))])
      result[name] = {
          "replicas": strategy.num_replicas_in_sync, "losses": losses,
          "updates": [(v.numpy() - s).ravel().tolist() for v, s in zip(
              model.trainable_variables, start)]}

    # (3) Checkpoints across strategies: resume a run started on one device,
    # and start one that the test resumes on one device.
    def run(directory, epochs):
      train.run_training(run_spec(
          directory, "joint", models.get("joint").Config(**SMALL_JOINT),
          epochs=epochs, batch_size=BATCH, learning_rate=3e-3, seed=0,
          train_subset=SUBSET), splits, strategy=mirrored, verbose=0)
    run(default_first, epochs=2)
    run(mirrored_first, epochs=1)
    print(json.dumps(result))
""")


@pytest.fixture(scope="module")
def mirrored_run(mnist, tmp_path_factory):
  """Runs _MIRRORED once; returns (its results, default-first dir,
  mirrored-first dir)."""
  root = tmp_path_factory.mktemp("strategies")
  default_first = str(root / "default_first")
  mirrored_first = str(root / "mirrored_first")
  _train(default_first, mnist, epochs=1)
  result = subprocess.run(
      [sys.executable, "-c", _MIRRORED, default_first, mirrored_first,
       str(BATCH), str(SUBSET)],
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
  assert result.returncode == 0, result.stderr[-3000:]
  return (json.loads(result.stdout.strip().splitlines()[-1]), default_first,
          mirrored_first)


@pytest.mark.slow
def test_two_replicas_take_the_same_steps_as_one_device(mirrored_run):
  result, _, _ = mirrored_run
  single, mirrored = result["single"], result["mirrored"]
  assert (single["replicas"], mirrored["replicas"]) == (1, 2)
  # The loss of the first step, then the mean of both (as Keras logs it).
  np.testing.assert_allclose(mirrored["losses"], single["losses"], rtol=1e-5)
  one = np.concatenate(single["updates"])
  two = np.concatenate(mirrored["updates"])
  assert np.abs(one).max() > 1e-3  # the steps did move the weights
  # Gradients summed over replicas without the 1/replicas share would make
  # this ratio 2.
  assert np.dot(two, one) / np.dot(one, one) == pytest.approx(1, abs=1e-4)
  np.testing.assert_allclose(two, one, atol=1e-5 * np.abs(one).max() + 1e-7)


@pytest.mark.slow
def test_a_run_started_on_one_device_resumes_mirrored(mirrored_run):
  _, default_first, _ = mirrored_run
  assert _history(default_first) == [0, 1]
  assert _latest(default_first) == "ckpt-2"
  assert model_dir.read_config(default_first)["training"]["replicas"] == 1
  model_dir.load(default_first)


@pytest.mark.slow
def test_a_mirrored_run_resumes_on_one_device(mirrored_run, mnist):
  _, _, mirrored_first = mirrored_run
  assert model_dir.read_config(mirrored_first)["training"]["replicas"] == 2
  after_mirrored = model_dir.load(mirrored_first).model
  # The checkpoint holds plain values: restored here without a strategy.
  _train(mirrored_first, mnist, epochs=2)
  assert _history(mirrored_first) == [0, 1]
  assert _latest(mirrored_first) == "ckpt-2"
  resumed = model_dir.load(mirrored_first).model
  moved = [not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(
      after_mirrored.trainable_variables, resumed.trainable_variables)]
  assert any(moved)


# -- MultiWorkerMirroredStrategy: two local workers ---------------------------

def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


@pytest.mark.slow
def test_two_workers_train_one_model_dir(tmp_path):
  run = str(tmp_path / "run")
  cluster = {"worker": [f"127.0.0.1:{p}" for p in _free_ports(2)]}
  args = [sys.executable, "-m", "tfvaeclf.train", "--strategy=multi_worker",
          f"--model_dir={run}", "--model=joint", "--dataset=mnist",
          "--filters=8,16", "--latent_channels=8", "--classifier_units=32",
          "--lmbda=10", "--epochs=1", f"--train_subset={SUBSET + 44}",
          "--validation_size=500", f"--batch_size={BATCH}"]
  workers = [subprocess.Popen(
      args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, env=_env(TF_CONFIG=json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": i}})))
      for i in range(2)]
  try:
    outputs = [w.communicate(timeout=TIMEOUT) for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
        w.wait()
  for w, (_, err) in zip(workers, outputs):
    assert w.returncode == 0, err[-3000:]
  (chief_out, _), (worker_out, _) = outputs
  assert "fingerprint" in chief_out
  assert "as a worker" in worker_out

  loaded = model_dir.load(run)
  assert loaded.config["training"]["replicas"] == 2
  assert loaded.config["training"]["batch_size"] == BATCH
  assert _history(run) == [0]
  assert _latest(run) == "ckpt-1"
  # Only the chief's files: no worker's scratch left in the model dir.
  leftovers = [os.path.join(d, name) for d, dirs, files in os.walk(run)
               for name in dirs + files if "workertemp" in name]
  assert not leftovers
