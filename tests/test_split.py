"""The split kind: a frozen backbone cut at S1-S3 with a bottleneck unit,
its two training modes, export, and the rate-configuration sweep."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import backbones, codec, data, model_dir, models, train
from tfvaeclf import export
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.experiments import points as points_lib
from tfvaeclf.experiments import split_sweep
from tfvaeclf.serve.bundle_server import BundleServer
from tests.conftest import run_cli, run_spec

WIDTHS = (16, 32, 64)  # conftest's classifier_dir


def _config(classifier_dir, **overrides):
  return models.get("split").Config(**{
      "backbone_from": classifier_dir, "backbone_widths": WIDTHS,
      "compress_factor": 8, "lmbda": 0.5, **overrides})


def _train(directory, config, splits, train_subset=256):
  train.run_training(run_spec(
      directory, "split", config, epochs=1, batch_size=64,
      learning_rate=3e-3, seed=0, train_subset=train_subset), splits,
      verbose=0)
  return model_dir.load(str(directory))


@pytest.fixture(scope="module")
def trained(classifier_dir, mnist, tmp_path_factory):
  """A supervised bottleneck at S2, trained for 8 steps."""
  return _train(tmp_path_factory.mktemp("split") / "run",
                _config(classifier_dir, split_point="S2"), mnist,
                train_subset=512)


def _weights(model):
  return [w.numpy() for w in model.weights]


@pytest.mark.slow
def test_backbone_stays_bit_identical_through_training(trained,
                                                       classifier_dir):
  model = trained.model
  uncut = model_dir.load_classifier(classifier_dir).model.backbone
  # Moving statistics of batch norm included.
  assert all(np.array_equal(a, b) for a, b in
             zip(_weights(uncut), _weights(model.backbone)))
  trainable = {id(v) for v in model.trainable_variables}
  assert trainable and not trainable & {id(v) for v in
                                        model.backbone.weights}


@pytest.mark.parametrize("name", backbones.NAMES)
@pytest.mark.slow
def test_every_split_point_builds_with_a_bottleneck(name):
  shape = (28, 28, 1) if name == "small_resnet" else (32, 32, 3)
  images = tf.random.uniform((2, *shape), seed=0)
  for point in backbones.split_points(name):
    model = models.build("split", {
        "image_shape": shape, "backbone": name, "split_point": point,
        "compress_factor": 16})
    outputs = model(images)
    features = model.front(images)
    assert outputs["latent_hat"].shape[1:] == (
        *features.shape[1:-1], features.shape[-1] // 16)
    assert model.bottleneck_decoder(
        outputs["latent_hat"]).shape == features.shape
    assert outputs["logits"].shape == (2, 10)
    assert outputs["bits"].shape == (2,)
    assert not model.backbone.trainable_weights


@pytest.mark.slow
def test_list_split_points_gives_layers_and_shapes(capsys):
  code, out, _ = run_cli(train.main, [
      "--list_split_points", "--dataset=mnist", "--validation_size=500",
      "--backbone_widths=8,16,24"], capsys)
  assert code is None
  assert out.splitlines() == [
      "split points of small_resnet for 28x28x1 images (point, layer, "
      "features):",
      "S1  stage3_out          4x4x24",
      "S2  stage2_out          7x7x16",
      "S3  stage1_out          14x14x8"]


def test_bad_settings_are_one_line_errors(classifier_dir):
  for overrides, needle in (({"compress_factor": 65}, "[1, 64]"),
                            ({"split_point": "S4"}, "choose one of S1"),
                            ({"bottleneck_mode": "self"}, "supervised"),
                            ({"backbone_widths": (8, 16, 32)},
                             "filters [16, 32, 64] (not [8, 16, 32])")):
    with pytest.raises(ValueError) as error:
      # The constructor checks settings; the backbone's source is checked
      # where the trainer reads it.
      model_dir.restore_backbone(
          models.build("split", _config(classifier_dir, **overrides)))
    assert needle in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_unsupervised_mode_reads_no_labels(classifier_dir, mnist, tmp_path):
  config = _config(classifier_dir, bottleneck_mode="unsupervised")
  constant = dataclasses.replace(mnist, train=mnist.train.map(
      lambda image, label: (image, tf.zeros_like(label))))
  real = _train(tmp_path / "real", config, mnist)
  blind = _train(tmp_path / "constant", config, constant)
  assert all(np.array_equal(a, b) for a, b in
             zip(_weights(real.model), _weights(blind.model)))
  # The check can fail: the supervised loss does read them.
  supervised = models.build("split", _config(classifier_dir))
  model_dir.restore_backbone(supervised)
  images, labels = next(iter(data.pipeline(mnist.test, 16)))
  outputs = supervised(images)
  assert (supervised.loss_terms(outputs, labels)["loss"] !=
          supervised.loss_terms(outputs, tf.zeros_like(labels))["loss"])
  assert real.model.loss_term_names() == ("loss", "kl", "bpp")


@pytest.mark.parametrize("entropy_model", ["factorized", "context"])
@pytest.mark.slow
def test_round_trip_is_bit_exact(entropy_model, trained, classifier_dir,
                                 mnist):
  if entropy_model == "factorized":
    model = trained.model
  else:
    model = models.build("split", _config(
        classifier_dir, split_point="S3", compress_factor=4,
        entropy_model="context"))
    model.coder.freeze()
  images, _ = next(iter(data.pipeline(mnist.test, 32)))
  in_graph = model(images)
  strings, latent_shape = model.compress(images)
  latent_hat = model.decompress([s.numpy() for s in strings], latent_shape)
  np.testing.assert_array_equal(latent_hat.numpy(),
                                in_graph["latent_hat"].numpy())
  np.testing.assert_array_equal(model.classify(latent_hat).numpy(),
                                in_graph["logits"].numpy())


@pytest.mark.slow
def test_export_splits_edge_and_server(trained, mnist, tmp_path):
  """The edge encoder is front + bottleneck encoder, the server decoder +
  back; what the edge runtime sends classifies as the in-graph path."""
  out = str(tmp_path / "bundle")
  export.export_bundle(trained, out, export.calibration_images(
      trained.config, 20))
  model = trained.model
  images, _ = next(iter(mnist.test.batch(200)))
  images = images.numpy()
  floats = data.to_float(images)
  expected = tf.argmax(model(floats)["logits"], -1).numpy()
  edge = EdgeEncoder(out)
  assert edge.latent_shape == (7, 7)  # S2 of a 28x28 image
  rounded_alike = np.all(
      edge.latents(images)["latent"] == np.rint(model.encode(floats)),
      axis=(1, 2, 3))
  assert np.mean(rounded_alike) >= 0.98
  file_bytes = edge.encode_file(images)
  predictions = codec.classify_file(trained, file_bytes)
  np.testing.assert_array_equal(predictions[rounded_alike],
                                expected[rounded_alike])
  served = BundleServer(out, trained.fingerprint)
  classes = served.classify(served.decode(file_bytes))["classes"]
  np.testing.assert_array_equal(classes, predictions)


# --- the rate-configuration sweep -------------------------------------------


def _sweep_flags(classifier_dir, rate_config, out, *extra):
  return ["--model=split", "--dataset=mnist", "--validation_size=500",
          f"--backbone_from={classifier_dir}", "--backbone_widths=16,32,64",
          "--train_subset=192", "--epochs=1", "--batch_size=64",
          "--learning_rate=0.003", f"--rate_config={rate_config}",
          f"--out={out}", "--max_examples=100", *extra]


def _write_json(path, value):
  path.write_text(json.dumps(value))
  return str(path)


@pytest.mark.slow
def test_two_point_rate_config_runs_end_to_end(classifier_dir, tmp_path,
                                               capsys):
  rates = _write_json(tmp_path / "rates.json", {
      "backbone": "small_resnet", "split_points": {
          "S1": [{"compress_factor": 8, "lmbda": 0.5},
                 {"compress_factor": 16, "lmbda": 2}],
          "S3": [{"compress_factor": 4, "lmbda": 1}]}})
  out = tmp_path / "sweep"
  argv = _sweep_flags(classifier_dir, rates, out, "--modes=unsupervised",
                      "--split_points=S1")
  code, stdout, err = run_cli(split_sweep.main, argv, capsys)
  assert code is None, err
  assert "[2/2] S1 unsupervised compress_factor=16 lmbda=2: training" in (
      stdout)
  with open(out / "points.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["split_point"], r["mode"], r["compress_factor"], r["lmbda"])
          for r in rows] == [("S1", "unsupervised", "8", "0.5"),
                             ("S1", "unsupervised", "16", "2.0")]
  with open(out / "uncut.json") as f:
    uncut = json.load(f)["results"]
  assert uncut["num_images"] == 100
  whole = model_dir.load_classifier(classifier_dir).model
  assert uncut["edge_parameters"] == whole.count_params()
  for row in rows:
    assert 0 < float(row["bytes_per_image"]) < float(
        row["message_bytes_per_image"]) < float(row["file_bytes_per_image"])
    assert 0 <= float(row["accuracy"]) <= 1
    with open(os.path.join(row["dir"], "config.json")) as f:
      config = json.load(f)["model_config"]
    assert (config["split_point"], config["bottleneck_mode"],
            config["compress_factor"]) == ("S1", "unsupervised",
                                           int(row["compress_factor"]))
    # sc2bench's edge size: the front (a part of the whole network) and
    # the bottleneck encoder; int8 about a quarter of float32.
    split_model = model_dir.load(row["dir"]).model
    assert int(row["edge_parameters"]) == (
        split_model.front.count_params()
        + split_model.bottleneck_encoder.count_params())
    assert split_model.front.count_params() < uncut["edge_parameters"]
    float_bytes, int8_bytes = (int(row["edge_float_bytes"]),
                               int(row["edge_int8_bytes"]))
    assert 4 * int(row["edge_parameters"]) < float_bytes
    assert float_bytes / 5 < int8_bytes < float_bytes / 2
  assert (out / "accuracy_vs_bytes_unsupervised.png").read_bytes()[:8] == (
      b"\x89PNG\r\n\x1a\n")
  # Rerun: nothing finished is trained or evaluated again.
  os.remove(out / "points.csv")
  code, stdout, err = run_cli(split_sweep.main, argv, capsys)
  assert code is None, err
  assert stdout.count("done before") == 2
  with open(out / "points.csv") as f:
    assert list(csv.DictReader(f)) == rows


def test_trivial_extremes_are_the_class_alone_and_the_whole_image():
  uncut = {"accuracy": 0.9, "edge_parameters": 1000,
           "edge_float_bytes": 5000, "edge_int8_bytes": 2000}
  codec = dict(dataset="mnist", kind="codec", bpp=1., payload_bpp=.5,
               payload_bytes_per_image=50.)
  points = [points_lib.Point(name="jpeg", setting="q 5", bytes_per_image=400.,
                             accuracy=.8, **codec),
            points_lib.Point(name="jpeg", setting="q 50", bytes_per_image=600.,
                             accuracy=.89, **codec),
            points_lib.Point(name="av1", setting="CRF 63", bytes_per_image=80.,
                             accuracy=.85, **codec),
            points_lib.Point(name="webp", setting="q 5", bytes_per_image=90.,
                             **codec)]  # no reader: not an extreme
  extremes = split_sweep.trivial_extremes(uncut, 10, points)
  assert list(extremes) == ["whole network on the board, class sent",
                            "whole image as JPEG"]
  (board,) = extremes["whole network on the board, class sent"]
  assert board["message_bytes_per_image"] == pytest.approx(0.415, abs=1e-3)
  assert board["edge_int8_bytes"] == 2000 and board["accuracy"] == .9
  assert [row["message_bytes_per_image"]
          for row in extremes["whole image as JPEG"]] == [400., 600.]
  assert split_sweep.trivial_extremes(None, 10, []) == {}


@pytest.mark.parametrize("rates, needle", [
    (None, "cannot read it"),
    ("{not json", "not JSON"),
    ({"backbone": "resnet50", "split_points": {}}, "it is for resnet50"),
    ({"backbone": "small_resnet", "split_points": {"S9": [
        {"compress_factor": 8, "lmbda": 1}]}}, "no split point 'S9'"),
    ({"backbone": "small_resnet", "split_points": {"S1": [
        {"compress_factor": 0, "lmbda": 1}]}}, "positive integer"),
    ({"backbone": "small_resnet", "split_points": {"S1": [
        {"compress_factor": 8}]}}, "exactly compress_factor and lmbda"),
    ({"backbone": "small_resnet", "split_points": {"S1": [
        {"compress_factor": 8, "lmbda": 1}]}}, "--split_points S2"),
])
def test_bad_rate_config_is_one_line(rates, needle, tmp_path, capsys):
  path = tmp_path / "rates.json"
  if isinstance(rates, str):
    path.write_text(rates)
  elif rates is not None:
    _write_json(path, rates)
  code, _, err = run_cli(split_sweep.main, _sweep_flags(
      "unused", path, tmp_path / "out", "--split_points=S2"), capsys)
  assert code == 2 and err.count("\n") == 1 and needle in err, err
  assert not (tmp_path / "out").exists()
