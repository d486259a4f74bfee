"""The uncompressed classifier kind and its backbones: split points,
weights files, and the train / model dir / evaluate path without a coder."""

import functools
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import backbones, codec, data, evaluate, model_dir, models
from tfvaeclf import train
from tfvaeclf.experiments import points as points_lib
from tfvaeclf.export import __main__ as export_main
from tests.conftest import MNIST_ARGS, SMALL_JOINT, run_cli


@functools.lru_cache(maxsize=None)
def _backbone(name):
  """A backbone with random weights; tests must not change them."""
  shape = (28, 28, 1) if name == "small_resnet" else (64, 64, 3)
  tf.keras.utils.set_random_seed(0)
  return backbones.build(name, shape, 10), shape


@pytest.fixture(scope="module", params=backbones.NAMES)
def backbone(request):
  return _backbone(request.param)


@pytest.mark.slow
def test_split_rejoins_to_the_uncut_logits(backbone):
  model, shape = backbone
  images = tf.random.uniform((2, *shape), seed=1)
  logits = model(images, training=False)
  assert logits.shape == (2, 10)
  points = backbones.split_points(model.name)
  assert list(points) == ["S1", "S2", "S3"]
  for point, layer in points.items():
    front, back = backbones.split(model, point)
    features = front(images, training=False)
    assert features.shape[1:] == model.get_layer(layer).output.shape[1:]
    np.testing.assert_allclose(back(features, training=False), logits,
                               rtol=1e-5, atol=1e-5)
    # The halves share the backbone's weights rather than copying them.
    assert {id(w) for w in front.weights + back.weights} <= {
        id(w) for w in model.weights}


def test_resnet50_split_points_are_seed_004s():
  assert backbones.split_points("resnet50") == {
      "S1": "conv5_block3_out", "S2": "conv5_block1_out",
      "S3": "conv4_block5_out"}


def test_unknown_names_are_one_line_errors(backbone):
  model, _ = backbone
  with pytest.raises(ValueError, match="choose one of S1, S2, S3"):
    backbones.split(model, "S4")
  with pytest.raises(ValueError,
                     match="small_resnet, resnet8, resnet20, resnet9, "
                           "plain_cnn, resnet50"):
    backbones.split_points("vgg")
  with pytest.raises(ValueError, match="at least 32x32"):
    backbones.build("resnet50", (28, 28, 1), 10)


def test_small_resnet_takes_cifar_images():
  model = backbones.build("small_resnet", (32, 32, 3), 10)
  assert model(tf.zeros((1, 32, 32, 3))).shape == (1, 10)


def test_cifar_resnets_keep_the_first_stage_at_full_resolution():
  """resnet8 is small_resnet's weights after a stride-1 stem (MLPerf Tiny's
  ResNet-8); resnet20 adds two blocks a stage (He et al.'s ResNet-20)."""
  small, resnet8, resnet20 = (backbones.build(name, (32, 32, 3), 10)
                              for name in ("small_resnet", "resnet8",
                                           "resnet20"))
  assert small.get_layer("stage1_out").output.shape[1:3] == (16, 16)
  assert resnet8.get_layer("stage1_out").output.shape[1:3] == (32, 32)
  assert resnet8.count_params() == small.count_params() == 78_714
  assert resnet20.get_layer("stage3_out").output.shape[1:] == (8, 8, 64)
  assert sum(layer.name.endswith("_add") for layer in resnet20.layers) == 9
  assert 270_000 < resnet20.count_params() < 280_000


def test_resnet9_is_pages_pooled_stages_with_two_residual_pairs():
  """Page's ResNet-9 at its widths: a 64-wide stem, stages of 128, 256 and
  512 each halving the size, residual pairs in the first and last."""
  model = backbones.build("resnet9", (32, 32, 3), 10,
                          widths=(128, 256, 512))
  assert [model.get_layer(f"stage{n}_out").output.shape[1:]
          for n in (1, 2, 3)] == [(16, 16, 128), (8, 8, 256), (4, 4, 512)]
  assert model.get_layer("stem_conv").output.shape[-1] == 64
  assert [layer.name for layer in model.layers
          if isinstance(layer, tf.keras.layers.Add)] == [
              "stage1_add", "stage3_add"]
  convs = (3 * 64 + 64 * 128 + 2 * 128 * 128 + 128 * 256 + 256 * 512
           + 2 * 512 * 512) * 9
  norms = 4 * (64 + 3 * 128 + 256 + 3 * 512)
  assert model.count_params() == convs + norms + 512 * 10 + 10


def test_the_head_keeps_float32_logits_under_bfloat16_layers():
  policy = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    model = backbones.build("resnet8", (32, 32, 3), 10, widths=(8, 8, 8))
  finally:
    tf.keras.mixed_precision.set_global_policy(policy)
  assert model.get_layer("stage1_out").compute_dtype == "bfloat16"
  assert model(tf.zeros((1, 32, 32, 3))).dtype == tf.float32


def test_plain_cnn_is_the_smallest_board_for_its_weights():
  """No residual adds or projections: every weight is a conv's, a batch
  norm's (folded on the board) or the head's."""
  model = backbones.build("plain_cnn", (32, 32, 3), 10, widths=(8, 12, 16))
  assert [model.get_layer(f"stage{n}_out").output.shape[1:3]
          for n in (1, 2, 3)] == [(32, 32), (16, 16), (8, 8)]
  assert not any(isinstance(layer, tf.keras.layers.Add)
                 for layer in model.layers)
  convs = 3 * 9 * 8 + 8 * 9 * 12 + 12 * 9 * 16
  norms = 4 * (8 + 12 + 16)
  assert model.count_params() == convs + norms + 16 * 10 + 10


def _same_weights(a, b, skip=()):
  pairs = [(x, y) for x, y in zip(a.layers, b.layers) if x.name not in skip]
  assert pairs and all(x.name == y.name for x, y in pairs)
  return all(np.array_equal(u, v) for x, y in pairs
             for u, v in zip(x.get_weights(), y.get_weights()))


@pytest.mark.slow
def test_resnet50_weights_load_from_a_file(tmp_path):
  source, shape = _backbone("resnet50")  # cached, never changed
  path = str(tmp_path / "resnet50.h5")  # the layout of ImageNet's files
  source.save_weights(path)
  # Loaded by name; the head, for another number of classes, is left out
  # (as when ImageNet's 1000-class file serves a 5-class task).
  classifier = models.build("classifier", {
      "image_shape": shape, "num_classes": 5, "backbone": "resnet50",
      "backbone_weights": path})
  model_dir.restore_backbone(classifier)  # the constructor reads no file
  assert _same_weights(source, classifier.backbone, skip=[backbones.HEAD])
  assert _same_weights(source, backbones.build("resnet50", shape, 10,
                                               weights=path))


def test_keras3_weights_files_load_whole(tmp_path):
  source, shape = _backbone("small_resnet")
  path = str(tmp_path / "small.weights.h5")
  source.save_weights(path)
  assert _same_weights(source, backbones.build("small_resnet", shape, 10,
                                               weights=path))


@pytest.mark.slow
def test_a_weights_file_that_does_not_fit_is_one_line(tmp_path, backbone):
  model, shape = backbone
  with pytest.raises(ValueError, match="does not exist") as missing:
    backbones.build(model.name, shape, 10,
                    weights=str(tmp_path / "missing.h5"))
  garbage = tmp_path / "garbage.h5"
  garbage.write_bytes(b"not hdf5")
  with pytest.raises(ValueError, match="not a Keras .h5 file") as bad:
    backbones.load_weights(model, str(garbage))
  # Narrower: the same layer names (small_resnet), other shapes; or none of
  # the layers (resnet50).
  narrow = str(tmp_path / "narrow.h5")
  backbones.small_resnet((28, 28, 1), 10, widths=(8, 8, 8)).save_weights(
      narrow)
  before = [w.copy() for w in model.get_weights()]
  with pytest.raises(ValueError, match="do not fit") as wrong:
    backbones.load_weights(model, narrow)
  assert all(np.array_equal(a, b)
             for a, b in zip(before, model.get_weights()))
  for error in (missing, bad, wrong):
    assert "\n" not in str(error.value)


# --- the classifier kind (conftest's classifier_dir) -------------------------


def test_classifier_trains_into_a_model_dir_without_tables(classifier_dir):
  files = set(os.listdir(classifier_dir))
  assert {"config.json", "model.json", "checkpoints", "history.csv"} <= files
  assert model_dir.ModelDir.TABLES not in files
  with open(os.path.join(classifier_dir, "config.json")) as f:
    config = json.load(f)
  assert config["model"] == "classifier"
  assert config["training"]["augment"] == "shift"


def _untrained_joint_dir(directory, splits):
  """A finished joint model dir, without the cost of training it."""
  config = models.get("joint").Config(**SMALL_JOINT)
  model = models.build("joint", config)
  model.build_from_config()
  model_dir.write_config(directory, "joint", config, MNIST_ARGS,
                         splits.info.class_names, {})
  manager = model_dir.checkpoint_manager(
      directory, model_dir.training_checkpoint(model))
  model_dir.finalize(directory, model, manager.save())
  return directory


@pytest.mark.slow
def test_only_callers_that_need_no_coder_load_it(classifier_dir, mnist,
                                                 tmp_path):
  with pytest.raises(model_dir.ModelDirError, match="uncompressed"):
    model_dir.load(classifier_dir)
  loaded = model_dir.load(classifier_dir, allow_uncompressed=True)
  assert loaded.model.coder is None
  again = model_dir.load_classifier(classifier_dir)
  assert again.fingerprint == loaded.fingerprint
  with pytest.raises(model_dir.ModelDirError, match="not an uncompressed"):
    model_dir.load_classifier(_untrained_joint_dir(str(tmp_path), mnist))


def test_evaluate_reports_accuracy_at_the_raw_rate(classifier_dir, mnist):
  loaded = model_dir.load_classifier(classifier_dir)
  results = evaluate.evaluate(loaded, mnist.test.take(300), batch_size=128,
                              progress=False)
  assert results["num_images"] == 300
  assert results["uncompressed"] is True
  assert 0.6 < results["accuracy"] <= 1.
  assert results["cross_entropy"] > 0
  assert results["bytes_per_image"] == 28 * 28
  assert results["bpp"] == 8.


def test_evaluate_cli_writes_what_the_report_reads(classifier_dir, capsys):
  code, out, _ = run_cli(evaluate.main, [
      f"--model_dir={classifier_dir}", "--max_examples=100"], capsys)
  assert not code and "accuracy" in out
  point = points_lib.load_run(classifier_dir)
  assert point.kind == "uncompressed" and point.bpp == point.payload_bpp == 8.
  assert 0. <= point.accuracy <= 1.


def test_export_and_codec_refuse_it_in_one_line(classifier_dir, tmp_path,
                                                capsys):
  bundle = tmp_path / "bundle"
  code, _, err = run_cli(export_main.main, [
      f"--model_dir={classifier_dir}", f"--out={bundle}"], capsys)
  assert code == 2 and err.count("\n") == 1 and "uncompressed" in err
  assert not bundle.exists()
  image = tmp_path / "digit.png"
  data.write_png(str(image), np.zeros((28, 28, 1), np.uint8))
  code, _, err = run_cli(codec.main, [
      "compress", f"--model_dir={classifier_dir}",
      f"--output={tmp_path / 'x.tfvc'}", str(image)], capsys)
  assert code == 2 and err.count("\n") == 1 and "uncompressed" in err


@pytest.mark.slow
def test_train_cli_reports_a_missing_weights_file_in_one_line(tmp_path,
                                                              capsys):
  code, _, err = run_cli(train.main, [
      "--model=classifier", "--backbone=small_resnet",
      f"--backbone_weights={tmp_path / 'missing.h5'}",
      f"--model_dir={tmp_path / 'run'}", "--validation_size=500"], capsys)
  assert code == 2 and err.count("\n") == 1 and "does not exist" in err
  assert not (tmp_path / "run").exists()
