"""Shared fixtures: real MNIST, and one small model trained on it."""

import gc
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import pytest  # noqa: E402

from tfvaeclf import data  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small enough to train in seconds on 2 cores, real enough to classify.
SMALL_JOINT = {"filters": (8, 16), "latent_channels": 8,
               "classifier_units": (32,), "lmbda": 10.0}
MNIST_ARGS = {"name": "mnist", "data_dir": None, "image_size": None,
              "validation_size": 500, "seed": 0, "download": False}


@pytest.fixture
def no_gc_pauses():
  """For a test that times its code: collects first, then keeps the
  collector off. A full collection of the test process's heap, grown by
  every test before (TensorFlow's objects), pauses every thread of it,
  seen at 0.2 to 1.5 s: not what the timed code costs."""
  gc.collect()
  gc.disable()
  yield
  gc.enable()


@pytest.fixture(scope="session")
def mnist():
  return data.load(**MNIST_ARGS)


def run_spec(directory, model_name, config, **training):
  """A `specs.RunSpec` of `config` on MNIST_ARGS' data into `directory`,
  with the `specs.TrainSpec` fields `training`."""
  from tfvaeclf import specs
  return specs.RunSpec(model_name, config, specs.DataSpec(**MNIST_ARGS),
                       specs.TrainSpec(**training), model_dir=str(directory))


def run_cli(main, argv, capsys):
  """Runs an entry point's `main` in-process through `cli.run`, as the
  shell would: returns (exit code, stdout, stderr)."""
  from absl.testing import flagsaver
  from tfvaeclf import cli
  with flagsaver.flagsaver():
    with pytest.raises(SystemExit) as exit_info:
      cli.run(main, argv=["prog", *argv])
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


def train_small_joint(directory, splits, train_subset, **overrides):
  """One epoch of the small joint model on real MNIST; returns the dir."""
  from tfvaeclf import models, train
  config = models.get("joint").Config(**{**SMALL_JOINT, **overrides})
  train.run_training(run_spec(
      directory, "joint", config, epochs=1, batch_size=64,
      learning_rate=3e-3, seed=0, train_subset=train_subset), splits,
      verbose=0)
  return str(directory)


@pytest.fixture(scope="session")
def trained_dir(mnist, tmp_path_factory):
  """A joint model trained for one epoch on 3000 real MNIST digits."""
  return train_small_joint(tmp_path_factory.mktemp("joint"), mnist, 3000)


@pytest.fixture(scope="session")
def loaded(trained_dir):
  from tfvaeclf import model_dir
  return model_dir.load(trained_dir)


def train_small_classifier(directory, splits, backbone_weights=None):
  """One epoch of the uncompressed classifier kind (small_resnet) on 2000
  real digits at batch 16: ~125 steps, enough for batch norm's moving
  statistics to serve at test time (~90% accuracy)."""
  from tfvaeclf import models, train
  config = models.get("classifier").Config(backbone_weights=backbone_weights)
  train.run_training(run_spec(
      directory, "classifier", config, epochs=1, batch_size=16,
      learning_rate=3e-3, seed=0, train_subset=2000, augment="shift"),
      splits, verbose=0)
  return str(directory)


@pytest.fixture(scope="session")
def classifier_dir(mnist, tmp_path_factory):
  """The classifier kind, trained from a weights file that is deleted
  afterwards: a finished dir must not need it."""
  import tensorflow as tf
  from tfvaeclf import backbones
  root = tmp_path_factory.mktemp("classifier")
  start = str(root / "start.h5")
  tf.keras.utils.set_random_seed(0)  # the same start whatever ran before
  backbones.build("small_resnet", (28, 28, 1), 10).save_weights(start)
  directory = train_small_classifier(root / "run", mnist, start)
  os.remove(start)
  return directory


# Runs `python -m tfvaeclf.edge ARGS...` in a process where importing
# tensorflow (or anything named tensorflow*, or keras) fails, as on a board
# without it; then prints which of those modules got loaded anyway.
NO_TENSORFLOW = r"""
import runpy, sys

class NoTensorFlow:
  def find_spec(self, name, path=None, target=None):
    if name.startswith(("tensorflow", "keras", "tf_keras")):
      raise ImportError(f"{name} is not installed on this board")

sys.meta_path.insert(0, NoTensorFlow())
try:
  import tensorflow
  sys.exit("the block failed: tensorflow imported")
except ImportError:
  pass
sys.argv = ["tfvaeclf.edge", *sys.argv[1:]]
try:
  runpy.run_module("tfvaeclf.edge", run_name="__main__", alter_sys=True)
  code = 0
except SystemExit as e:
  code = e.code
print("loaded:", sorted({m.partition(".")[0] for m in sys.modules
                         if m.startswith(("tensorflow", "keras",
                                          "ai_edge_litert"))}))
sys.exit(code)
"""


def edge_process(*args):
  """`python -m tfvaeclf.edge ARGS...` where TensorFlow cannot be imported."""
  return subprocess.run(
      [sys.executable, "-c", NO_TENSORFLOW, *args], cwd=REPO,
      capture_output=True, text=True)


SMALL_RDC = {"filters": (8, 16), "latent_dim": 6, "levels": 4}


def train_small_rdc(directory, splits, classifier_dir, lambda_cls, seed,
                    pretrained_dir=None):
  """One epoch of a small rdc model on 600 real digits, judged by the
  classifier in `classifier_dir`; returns the dir."""
  from tfvaeclf import models, train
  config = models.get("rdc").Config(**{
      **SMALL_RDC, "backbone_from": classifier_dir, "lambda_cls": lambda_cls})
  train.run_training(run_spec(
      directory, "rdc", config, epochs=1, batch_size=32, learning_rate=2e-3,
      seed=seed, train_subset=600, freeze_encoder_from=pretrained_dir),
      splits, verbose=0)
  return str(directory)


@pytest.fixture(scope="session")
def bundle_dir(trained_dir, tmp_path_factory):
  """The session's small model, exported once through the export CLI (tests
  that alter a bundle alter a copy)."""
  from absl.testing import flagsaver
  from tfvaeclf import cli
  from tfvaeclf.export import __main__ as export_main
  out = str(tmp_path_factory.mktemp("export") / "bundle")
  with flagsaver.flagsaver():
    with pytest.raises(SystemExit) as exit_info:
      cli.run(export_main.main, argv=[
          "export", f"--model_dir={trained_dir}", f"--out={out}",
          "--calibration_examples=100"])
  assert exit_info.value.code is None
  return out
