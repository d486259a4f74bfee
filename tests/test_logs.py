"""Quiet logs: real commands print progress and results, each line once,
without TensorFlow's noise; the warnings that matter stay."""

import collections
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# absl's prefix: level, date, time, thread, file:line.
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\] ")


def _python(*args):
  """A process as a user starts it: no TF_CPP_MIN_LOG_LEVEL of our own."""
  env = {key: value for key, value in os.environ.items()
         if key != "TF_CPP_MIN_LOG_LEVEL"}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True)


def _messages(stderr):
  return [ABSL_PREFIX.sub("", line) for line in stderr.splitlines()]


def _assert_each_once(stderr):
  repeated = [line for line, count in collections.Counter(
      _messages(stderr)).items() if count > 1]
  assert not repeated, stderr[-2000:]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """(model dir, training's stderr): a short real training by the CLI."""
  run = str(tmp_path_factory.mktemp("logs") / "run")
  result = _python(
      "-m", "tfvaeclf.train", "--flagfile=configs/mnist_joint.flags",
      f"--model_dir={run}", "--epochs=2", "--train_subset=2000",
      "--validation_size=500", "--filters=8,16", "--latent_channels=8")
  assert result.returncode == 0, result.stderr[-2000:]
  return run, result.stderr


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("logs_export") / "bundle")
  result = _python("-m", "export", f"--model_dir={trained[0]}",
                   f"--out={out}", "--calibration_examples=20")
  assert result.returncode == 0, result.stderr[-2000:]
  return out, result.stderr


def test_training_prints_progress_without_noise(trained):
  _, stderr = trained
  assert "is slow" not in stderr
  assert "WARNING:tensorflow" not in stderr  # TensorFlow's own handler
  assert "dataset mnist" in stderr
  assert "training on 2000 of the 59500 training images" in stderr
  _assert_each_once(stderr)


@pytest.mark.slow
def test_export_prints_each_line_once_without_tensorflow_chatter(bundle):
  _, stderr = bundle
  assert "INFO:tensorflow" not in stderr
  for chatter in ("Assets written", "fingerprint.pb", "signature"):
    assert chatter not in stderr
  _assert_each_once(stderr)


@pytest.mark.slow
def test_tf_lite_fallback_loads_quietly(bundle):
  script = (
      "import sys\n"
      "from tfvaeclf.edge import interpreter\n"
      "for name in interpreter.RUNTIMES:\n"
      "  sys.modules[name] = None  # makes its import fail\n"
      f"_, runtime = interpreter.load_interpreter("
      f"{os.path.join(bundle[0], 'edge', 'encoder.tflite')!r})\n"
      "print(runtime)\n")
  result = _python("-c", script)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "tensorflow.lite"
  assert "cuda" not in result.stderr.lower(), result.stderr
  assert "cpu_feature_guard" not in result.stderr


@pytest.mark.parametrize("many_models", [False, True])
@pytest.mark.slow
def test_only_commands_of_many_models_drop_retracing_warnings(many_models):
  # Six new functions of one code, as six models of a sweep trace theirs.
  script = (
      "from tfvaeclf import cli\n"
      "from absl import logging\n"
      "import tensorflow as tf\n"
      "def main(argv):\n"
      "  for _ in range(6):\n"
      "    function = tf.function(lambda x: x + 1)\n"
      "    for n in range(2):\n"
      "      function(tf.zeros([n + 1]))\n"
      "  logging.warning('a warning that matters')\n"
      f"cli.run(main, many_models={many_models})\n")
  result = _python("-c", script)
  assert result.returncode == 0, result.stderr[-2000:]
  assert "a warning that matters" in result.stderr
  assert ("retracing" in result.stderr) != many_models, result.stderr
