"""Training, resuming, divergence, evaluation and the CLIs end to end."""

import csv
import dataclasses
import glob
import json
import os
import signal
import subprocess
import sys
import time

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import cli, data, evaluate, model_dir, models, specs, train
from tests.conftest import SMALL_JOINT, run_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Training configs; search configs (*_search.flags) are test_search's.
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.flags"))
                 if not p.endswith("_search.flags"))


def _python(*args, **kwargs):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, **kwargs)


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
@pytest.mark.slow
def test_every_config_parses_into_a_model(path, mnist):
  with flagsaver.flagsaver():
    FLAGS = flags.FLAGS
    FLAGS(["train", f"--flagfile={path}"])
    height, width, channels = (32, 32, 3) if FLAGS.dataset == "cifar10" else (
        mnist.info.image_shape)
    size = FLAGS.image_size
    info = dataclasses.replace(mnist.info, image_shape=(
        size or height, size or width, channels))
    run = specs.from_flags(FLAGS)
    config = run.with_data(info).model
    # The classifier dir a config builds on is trained separately (runs/
    # is not in the repository); random weights stand in for it.
    if getattr(config, "backbone_from", None):
      config = dataclasses.replace(config, backbone_from=None)
    models.build(run.model_name, config).build_from_config()


def _history(directory):
  with open(os.path.join(directory, "history.csv")) as f:
    return [int(row["epoch"]) for row in csv.DictReader(f)]


def _small(**overrides):
  return models.get("joint").Config(**{**SMALL_JOINT, **overrides})


def _train(directory, splits, epochs, config=None, subset=1000,
           lr_schedule="constant", learning_rate=3e-3):
  return train.run_training(run_spec(
      directory, "joint", config or _small(), epochs=epochs, batch_size=64,
      learning_rate=learning_rate, seed=0, train_subset=subset,
      lr_schedule=lr_schedule), splits, verbose=0)


@pytest.mark.slow
def test_rerun_continues_where_it_stopped(mnist, tmp_path):
  _train(tmp_path, mnist, epochs=1, lr_schedule="cosine")
  _train(tmp_path, mnist, epochs=2, lr_schedule="cosine")
  assert _history(tmp_path) == [0, 1]
  with open(tmp_path / "history.csv") as f:
    rates = [float(row["lr"]) for row in csv.DictReader(f)]
  # Cosine over the 2 epochs of the second run; the first run's single
  # epoch used the full rate.
  assert rates == pytest.approx([3e-3, 3e-3 * (0.02 + 0.98 * 0.5)],
                                rel=1e-4)
  assert os.path.basename(tf.train.latest_checkpoint(
      str(tmp_path / "checkpoints"))) == "ckpt-2"
  # The dir says what trained it: 2 epochs now.
  assert model_dir.read_config(str(tmp_path))["training"]["epochs"] == 2
  model_dir.load(str(tmp_path))


@pytest.mark.slow
def test_rerun_with_other_settings_is_refused(mnist, tmp_path):
  _train(tmp_path, mnist, epochs=1)
  with pytest.raises(cli.UserError) as error:
    _train(tmp_path, mnist, epochs=2, config=_small(latent_channels=4))
  assert str(error.value) == (
      f"{tmp_path} was started with a different model_config "
      "(latent_channels 8, now 4); use a new --model_dir")
  with pytest.raises(cli.UserError) as error:
    _train(tmp_path, mnist, epochs=2, subset=500, learning_rate=1e-3)
  assert str(error.value) == (
      f"{tmp_path} was trained with other training flags (--learning_rate "
      "0.003, now 0.001; --train_subset 1000, now 500); resume it with its "
      "own or use a new --model_dir")
  assert _history(tmp_path) == [0]


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_epoch(mnist, tmp_path,
                                                      monkeypatch):
  _train(tmp_path, mnist, epochs=1)
  good = model_dir.load(str(tmp_path)).fingerprint
  original = models.get("joint").loss_terms

  def poisoned(self, outputs, labels):
    terms = original(self, outputs, labels)
    return {**terms, "loss": terms["loss"] * np.nan}

  monkeypatch.setattr(models.get("joint"), "loss_terms", poisoned)
  with pytest.raises(train.TrainingDiverged, match="epoch 2, batch 1.*"
                     "kept the checkpoint of epoch 1"):
    _train(tmp_path, mnist, epochs=2)
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith(
      "ckpt-1")
  assert model_dir.load(str(tmp_path)).fingerprint == good
  # In the first epoch, nothing is kept, and the message says so.
  with pytest.raises(train.TrainingDiverged) as error:
    _train(tmp_path / "fresh", mnist, epochs=1)
  assert "epoch 1, batch 1; no epoch finished, so" in str(error.value)
  assert "holds no checkpoint" in str(error.value)
  assert tf.train.latest_checkpoint(
      str(tmp_path / "fresh" / "checkpoints")) is None


@pytest.mark.slow
def test_decoder_model_reconstructs_from_the_file(mnist, tmp_path):
  from tfvaeclf import codec
  config = _small(decoder=True, gamma=100.0, lmbda=0.5)
  _train(tmp_path, mnist, epochs=3, config=config, subset=2000)
  loaded = model_dir.load(str(tmp_path))
  images, _ = next(iter(mnist.test.batch(64)))
  images = images.numpy()
  reconstructed = codec.reconstruct_file(
      loaded, codec.compress_images(loaded, images))
  in_graph = loaded.model(data.to_float(images), training=False)["x_hat"]
  np.testing.assert_array_equal(
      reconstructed, np.round(in_graph.numpy() * 255).astype(np.uint8))

  def psnr(guess):
    mse = np.mean((guess / 255. - images / 255.) ** 2)
    return 10 * np.log10(1 / mse)

  mean_image = np.broadcast_to(images.mean(axis=0), images.shape)
  assert psnr(reconstructed) > psnr(mean_image) + 1
  results = evaluate.evaluate(loaded, mnist.test.take(64), progress=False)
  assert results["psnr"] == pytest.approx(
      psnr(in_graph.numpy() * 255), abs=0.5)


def test_evaluate_counts_real_bytes(loaded, mnist):
  results = evaluate.evaluate(loaded, mnist.test.take(300), batch_size=128,
                              progress=False)
  assert results["num_images"] == 300
  assert results["agreement_with_in_graph"] == 1.0
  assert results["accuracy"] > 0.5  # one short epoch; chance is 0.1
  assert results["bpp"] == pytest.approx(
      8 * results["bytes_per_image"] / 784)
  # Real bytes cost the information content plus well under 2 bytes.
  assert 0 < results["bytes_per_image"] - results[
      "estimated_bytes_per_image"] < 2


@pytest.mark.slow
def test_end_to_end_cli_on_real_mnist(tmp_path, mnist):
  """train -> evaluate -> codec compress -> codec classify, as processes."""
  run = str(tmp_path / "run")
  result = _python(
      "tfvaeclf.train", "--flagfile=configs/mnist_joint.flags",
      f"--model_dir={run}", "--epochs=1", "--train_subset=2000",
      "--validation_size=500", "--filters=8,16", "--latent_channels=8")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "fingerprint" in result.stdout

  result = _python("tfvaeclf.evaluate", f"--model_dir={run}",
                   "--max_examples=200")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(os.path.join(run, "eval.json")) as f:
    report = json.load(f)
  assert {"accuracy", "bpp", "bytes_per_image", "estimated_bpp"} <= set(
      report)
  assert report["agreement_with_in_graph"] == 1.0

  images, _ = next(iter(mnist.test.batch(6)))
  paths = []
  for i, image in enumerate(images.numpy()):
    paths.append(str(tmp_path / f"{i}.png"))
    data.write_png(paths[-1], image)
  coded = str(tmp_path / "six.tfvc")
  result = _python("tfvaeclf.codec", "compress", f"--model_dir={run}",
                   f"--output={coded}", *paths)
  assert result.returncode == 0, result.stderr[-2000:]
  result = _python("tfvaeclf.codec", "classify", f"--model_dir={run}", coded)
  assert result.returncode == 0, result.stderr[-2000:]

  loaded = model_dir.load(run)
  logits = loaded.model(data.to_float(images), training=False)["logits"]
  names = loaded.config["class_names"]
  assert result.stdout.split() == [
      names[i] for i in tf.argmax(logits, -1).numpy()]


@pytest.mark.slow
def test_kill_9_then_rerun_loses_no_finished_epoch(tmp_path):
  run = str(tmp_path / "run")
  args = ("tfvaeclf.train", "--flagfile=configs/mnist_joint.flags",
          f"--model_dir={run}", "--epochs=3", "--train_subset=3000",
          "--validation_size=500", "--filters=8,16", "--latent_channels=8")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  process = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO,
                             env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  # The index file lands before the checkpoint's state file: wait for the
  # state, or the kill can fall between the two.
  checkpoints = os.path.join(run, "checkpoints")
  deadline = time.time() + 300
  while (tf.train.latest_checkpoint(checkpoints) is None
         and process.poll() is None):
    assert time.time() < deadline, "no checkpoint after 300 s"
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert not os.path.exists(os.path.join(run, "model.json"))
  done = int(tf.train.latest_checkpoint(
      os.path.join(run, "checkpoints")).rsplit("-", 1)[1])

  result = _python(*args, "--verbosity=0")
  assert result.returncode == 0, result.stderr[-2000:]
  assert f"Resuming {run} after epoch {done}" in result.stderr
  assert _history(run) == [0, 1, 2]
  model_dir.load(run)


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_weight_decay_shrinks_kernels_alone(name):
  """--weight_decay is decoupled, scaled by the learning rate, and leaves
  biases and batch-norm scales and offsets alone, with either optimizer."""
  settings = specs.TrainSpec(optimizer=name, learning_rate=0.1,
                             weight_decay=0.5)
  optimizer = train._optimizer(settings)
  layer = tf.keras.layers.Dense(2, bias_initializer="ones")
  norm = tf.keras.layers.BatchNormalization()
  layer.build((None, 3))
  norm.build((None, 2))
  variables = layer.trainable_variables + norm.trainable_variables
  before = [v.numpy().copy() for v in variables]
  optimizer.apply_gradients(
      [(tf.zeros_like(v), v) for v in variables])
  kernel, bias, gamma, beta = (v.numpy() for v in variables)
  np.testing.assert_allclose(kernel, before[0] * (1 - 0.1 * 0.5), rtol=1e-6)
  for after, start in ((bias, before[1]), (gamma, before[2]),
                       (beta, before[3])):
    np.testing.assert_array_equal(after, start)
  assert type(optimizer).__name__ == {"adam": "AdamW", "sgd": "SGD"}[name]
  assert type(train._optimizer(specs.TrainSpec())).__name__ == "Adam"


def test_sgd_steps_with_nesterov_momentum():
  """--optimizer=sgd: a constant gradient g moves a weight by lr*g*(1+m)
  on the first Nesterov step, m = 0.9."""
  optimizer = train._optimizer(specs.TrainSpec(optimizer="sgd",
                                               learning_rate=0.1))
  weight = tf.Variable([1.])
  optimizer.apply_gradients([(tf.constant([2.]), weight)])
  np.testing.assert_allclose(weight.numpy(), [1. - 0.1 * 2. * 1.9],
                             rtol=1e-6)


@pytest.mark.slow
def test_bfloat16_training_gives_a_float32_classifier(mnist, tmp_path):
  """--precision=mixed_bfloat16: a classifier trains with bfloat16 layers,
  the dir records it, and what it finishes as runs in float32 and reads
  digits; the process's policy is float32 again after."""
  config = models.get("classifier").Config(image_shape=(28, 28, 1))
  # conftest's train_small_classifier, in bfloat16: ~90% in float32.
  train.run_training(run_spec(
      tmp_path, "classifier", config, epochs=1, batch_size=16,
      learning_rate=3e-3, train_subset=2000, precision="mixed_bfloat16"),
      mnist, verbose=0)
  assert tf.keras.mixed_precision.global_policy().name == "float32"
  assert model_dir.read_config(str(tmp_path))["training"][
      "precision"] == "mixed_bfloat16"
  loaded = model_dir.load_classifier(str(tmp_path))
  assert {v.dtype for v in loaded.model.variables} == {tf.float32}
  assert loaded.model.backbone.get_layer(
      "stage1_out").compute_dtype == "float32"
  results = evaluate.evaluate(loaded, mnist.test.take(500), batch_size=250,
                              progress=False)
  assert results["accuracy"] > 0.8
  with pytest.raises(cli.UserError) as error:
    train.run_training(run_spec(
        tmp_path / "joint", "joint", _small(), epochs=1,
        precision="mixed_bfloat16"), mnist, verbose=0)
  assert str(error.value) == ("--precision=mixed_bfloat16 trains a "
                              "classifier only; joint's coder needs float32")
  assert not (tmp_path / "joint").exists()
  assert tf.keras.mixed_precision.global_policy().name == "float32"
