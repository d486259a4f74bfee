"""The board's budget of a model dir: sizes, arena and int8 accuracy."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_cli
from tfvaeclf import data, errors, model_dir
from tfvaeclf.experiments import board
from tfvaeclf.export import encoder, exporter, sizes
from tfvaeclf.layout import ModelDir

NUM_IMAGES = 200


def _measured(source, tmp_path, capsys, calibration):
  """board.json of a copy of the model dir `source`, through the command."""
  directory = str(tmp_path / "run")
  shutil.copytree(source, directory)
  code, out, err = run_cli(board.main, [
      f"--model_dir={directory}", f"--calibration_examples={calibration}",
      f"--num_images={NUM_IMAGES}"], capsys)
  assert code is None, err
  assert "edge_int8_bytes" in out
  with open(ModelDir(directory).board_path) as f:
    return directory, json.load(f)


def _test_images(config):
  test = data.load(**dict(config["dataset"], download=False)).test
  return (np.concatenate(parts) for parts in zip(
      *test.take(NUM_IMAGES).batch(NUM_IMAGES).as_numpy_iterator()))


def _int8_outputs(flatbuffer, images):
  """{output: float32 dequantized}: the int8 model on uint8 `images`, its
  input quantized here with its own scale and zero point."""
  interpreter = tf.lite.Interpreter(model_content=flatbuffer)
  (detail,) = interpreter.get_input_details()
  interpreter.resize_tensor_input(detail["index"], images.shape)
  interpreter.allocate_tensors()
  scale, zero_point = detail["quantization"]
  quantized = np.clip(np.rint(images.astype(np.float32) / 255 / scale
                              + zero_point), 0, 255).astype(np.uint8)
  interpreter.set_tensor(detail["index"], quantized)
  interpreter.invoke()
  outputs = {}
  runner = interpreter.get_signature_runner()
  by_index = {d["index"]: name
              for name, d in runner.get_output_details().items()}
  for detail in interpreter.get_output_details():
    scale, zero_point = detail["quantization"]
    values = interpreter.get_tensor(detail["index"]).astype(np.float32)
    outputs[by_index[detail["index"]]] = (values - zero_point) * scale
  return outputs


def _check_budget(results, int8):
  assert results["edge_int8_bytes"] == len(int8)
  assert results["edge_macs"] == sizes.macs(int8) > 0
  arena = results["edge_arena_bytes"]
  assert arena > 0 and arena % 16 == 0
  assert 0 <= results["accuracy"] <= 1
  assert results["num_images"] == NUM_IMAGES
  assert results["class_bits"] == 4 and results["num_classes"] == 10
  assert results["edge_int8_bytes"] < results["edge_float_bytes"]


@pytest.mark.slow
def test_classifier_budget_is_the_whole_int8_classifier(
    classifier_dir, tmp_path, capsys):
  directory, results = _measured(classifier_dir, tmp_path, capsys, 50)
  loaded = model_dir.load(directory, allow_uncompressed=True)
  # The backbone alone: the model's other weights never reach the board.
  assert results["edge_parameters"] == loaded.model.backbone.count_params()
  function, _ = board.edge_part(loaded)
  calibration = exporter.calibration_images(loaded.config, 50)
  int8 = encoder.convert(function, loaded.model.config.image_shape,
                         calibration)
  _check_budget(results, int8)
  assert results["board_models"] == {} and results["board_model_bytes"] == 0
  images, labels = _test_images(loaded.config)
  logits = _int8_outputs(int8, images)["logits"]
  assert results["accuracy"] == pytest.approx(
      np.mean(np.argmax(logits, -1) == labels))
  assert results["accuracy"] > 0.5  # the int8 model still classifies


@pytest.mark.slow
def test_joint_budget_is_its_exported_int8_encoder(
    trained_dir, bundle_dir, tmp_path, capsys):
  # bundle_dir is exported with 100 calibration images: the same sample.
  directory, results = _measured(trained_dir, tmp_path, capsys, 100)
  from tfvaeclf.coding import bundle
  with open(os.path.join(bundle_dir, bundle.ENCODER_INT8), "rb") as f:
    int8 = f.read()
  _check_budget(results, int8)
  loaded = model_dir.load(directory)
  assert results["edge_parameters"] == loaded.model.analysis.count_params()
  # The server's classifier on the int8 latents, rounded as the board
  # rounds them: the factorized coder decodes them losslessly.
  images, labels = _test_images(loaded.config)
  latent = np.round(_int8_outputs(int8, images)["latent"])
  logits = loaded.model.classify(tf.constant(latent), training=False)
  assert results["accuracy"] == pytest.approx(
      np.mean(np.argmax(logits, -1) == labels))


def test_edge_size_is_kept_in_board_json(trained_dir, tmp_path):
  directory = str(tmp_path / "run")
  shutil.copytree(trained_dir, directory)
  calls = []

  def calibration():
    calls.append(1)
    return exporter.calibration_images(
        model_dir.load(directory).config, 20)

  size = board.edge_size(directory, calibration)
  assert set(size) == set(board.SIZE_FIELDS)
  assert ModelDir(directory).board() == size
  assert board.edge_size(directory, calibration) == size and calls == [1]


def test_errors_are_one_line(trained_dir, tmp_path, capsys, monkeypatch):
  unfinished = tmp_path / "unfinished"
  unfinished.mkdir()
  shutil.copy(os.path.join(trained_dir, ModelDir.CONFIG), unfinished)
  cases = [([], "usage"),
           ([f"--model_dir={tmp_path / 'none'}"], "no such directory"),
           ([f"--model_dir={tmp_path}"], "not a tfvaeclf model dir"),
           ([f"--model_dir={unfinished}"], "has not finished"),
           ([f"--model_dir={trained_dir}", f"--data_dir={tmp_path}"],
            "no copy of mnist"),
           ([f"--model_dir={trained_dir}", "--num_images=0"],
            "--num_images")]

  def no_dataset(name, **_):
    raise errors.DatasetUnavailableError(f"no copy of {name} in --data_dir")

  # MNIST is installed with the package; a dataset that is missing fails
  # in data.load.
  monkeypatch.setattr(board.data, "load", no_dataset)
  for argv, needle in cases:
    code, _, err = run_cli(board.main, argv, capsys)
    assert code == 2, (argv, err)
    assert err.count("\n") == 1 and err.startswith("error:"), err
    assert needle in err, (argv, err)
