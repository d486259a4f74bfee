"""The global latent of the joint kind, through codec, messages, export and
edge; and the frontier sweep with its Pareto front."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import codec, data, evaluate, model_dir, models
from tfvaeclf.experiments import frontier
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.serve.bundle_server import BundleServer
from tests.conftest import REPO, run_cli, train_small_joint


def test_global_latent_is_one_vector_an_image():
  model = models.build("joint", {"latent": "global", "latent_channels": 6})
  outputs = model(tf.random.stateless_uniform((8, 28, 28, 1), (0, 1)),
                  training=True)
  assert outputs["latent_hat"].shape == (8, 6)
  assert outputs["bits"].shape == (8,) and outputs["logits"].shape == (8, 10)
  assert model.latent_shape == ()
  assert model.coder.coding_rank == 1


@pytest.mark.parametrize("settings, message", [
    ({"latent": "global", "decoder": True, "gamma": 1.}, "cannot reconstruct"),
    ({"latent": "pixel"}, "Unknown --latent"),
])
def test_bad_latent_settings_are_refused(settings, message):
  with pytest.raises(ValueError, match=message):
    models.build("joint", settings)


@pytest.fixture(scope="module")
def global_dir(mnist, tmp_path_factory):
  return train_small_joint(tmp_path_factory.mktemp("global"), mnist, 2000,
                           latent="global", lmbda=1.)


@pytest.fixture(scope="module")
def global_loaded(global_dir):
  return model_dir.load(global_dir)


@pytest.fixture(scope="module")
def digits(mnist):
  images, labels = next(iter(mnist.test.batch(300)))
  return images.numpy(), labels.numpy()


@pytest.mark.slow
def test_files_and_messages_classify_as_the_graph_does(global_loaded,
                                                       digits):
  images, _ = digits
  expected = tf.argmax(global_loaded.model(
      data.to_float(images), training=False)["logits"], -1).numpy()
  assert global_loaded.codec.latent_shape == ()
  file_bytes = codec.compress_images(global_loaded, images)
  np.testing.assert_array_equal(
      codec.classify_file(global_loaded, file_bytes), expected)
  messages = codec.compress_messages(global_loaded, images[:20])
  assert [int(codec.classify_file(global_loaded, m)[0])
          for m in messages] == expected[:20].tolist()


@pytest.mark.slow
def test_evaluate_counts_the_message_bytes(global_loaded, mnist):
  results = evaluate.evaluate(global_loaded, mnist.test.take(500),
                              progress=False)
  assert results["accuracy"] > 0.5
  assert results["agreement_with_in_graph"] == 1.
  # One stream, no counter: a message is the string, a kind byte and a CRC.
  assert results["message_bytes_per_image"] == pytest.approx(
      results["bytes_per_image"] + 5)
  # At a few bytes an image, the factorized prior's estimate is close.
  assert abs(results["bytes_per_image"] -
             results["estimated_bytes_per_image"]) < 1.5


@pytest.mark.slow
def test_export_edge_and_server_code_the_global_latent(
    global_dir, global_loaded, digits, tmp_path, capsys):
  from tfvaeclf.export import __main__ as export_main
  out = str(tmp_path / "bundle")
  code, _, err = run_cli(export_main.main, [
      f"--model_dir={global_dir}", f"--out={out}",
      "--calibration_examples=100"], capsys)
  assert code is None, err
  images, _ = digits
  edge = EdgeEncoder(out)
  latents = edge.latents(images)["latent"]
  assert latents.shape == (len(images), global_loaded.model.config
                           .latent_channels)
  in_graph = global_loaded.model(data.to_float(images), training=False)
  served = BundleServer(out, global_loaded.fingerprint)
  predicted = served.classify(served.decode(edge.encode_file(images)))
  agree = np.mean(predicted["classes"] ==
                  tf.argmax(in_graph["logits"], -1).numpy())
  assert agree >= 0.98  # TFLite's float latent may round differently
  for message in edge.encode_messages(images[:5]):
    assert len(message) <= 5 + 16  # a few bytes of latent, 5 of message


@pytest.mark.slow
def test_two_point_frontier_writes_its_table_and_plot(tmp_path, capsys):
  out = tmp_path / "frontier"
  argv = ["--model=joint", "--dataset=mnist", "--validation_size=500",
          "--latent=global", "--filters=8,16", "--classifier_units=32",
          "--train_subset=500", "--epochs=1", "--batch_size=32",
          "--max_examples=200", "--latent_grid=4", "--lambda_grid=0.5,8",
          "--calibration_examples=50", "--budgets=1KB,1MB", f"--out={out}"]
  code, stdout, stderr = run_cli(frontier.main, argv, capsys)
  assert code in (0, None), stderr
  assert "[2/2]" in stdout
  with open(out / "points.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(int(r["latent_channels"]), float(r["lmbda"])) for r in rows] == [
      (4, .5), (4, 8.)]
  for row in rows:
    results = model_dir.ModelDir(row["dir"]).eval()
    assert results["num_images"] == 200
    assert float(row["bytes_per_image"]) == results["bytes_per_image"]
    assert float(row["message_bytes_per_image"]) == pytest.approx(
        results["bytes_per_image"] + 5)
    # Each point measured on the board, within one of the budgets.
    board = model_dir.ModelDir(row["dir"]).board()
    assert board["num_images"] == 200
    assert int(row["edge_int8_bytes"]) == board["edge_int8_bytes"] <= 10**6
    assert 0 <= float(row["board_accuracy"]) <= 1
  cheaper = min(rows, key=lambda r: float(r["bytes_per_image"]))
  assert cheaper["front_bytes_per_image"] == "True"
  assert os.path.getsize(out / "frontier_mnist.png") > 10_000
  tables = (out / "budgets.md").read_text()
  assert tables in stdout and "of int8 on the board" in tables
  assert sum(f"| {os.path.basename(row['dir'])} |" in tables
             for row in rows) == 2
  # A rerun trains nothing and writes the same table.
  before = (out / "points.csv").read_text()
  stamp = os.path.getmtime(os.path.join(rows[1]["dir"], "eval.json"))
  code, stdout, stderr = run_cli(frontier.main, argv, capsys)
  assert code in (0, None), stderr
  assert "done before" in stdout
  assert (out / "points.csv").read_text() == before
  assert os.path.getmtime(os.path.join(rows[1]["dir"], "eval.json")) == stamp


@pytest.mark.parametrize("flag, message", [
    ("--lambda_grid=1,x", "--lmbda"), ("--latent_grid=4,4", "repeated"),
    ("--model=rdc", "trains --model=joint"),
])
def test_frontier_flags_are_checked_in_one_line(tmp_path, capsys, flag,
                                                message):
  code, _, stderr = run_cli(frontier.main, [
      "--model=joint", f"--out={tmp_path}", flag], capsys)
  assert code == 2 and message in stderr and len(stderr.splitlines()) == 1


def _evaluated_dir(path, **results):
  """A model dir whose eval.json (newer than the model) holds `results`."""
  path.mkdir()
  (path / "model.json").write_text("{}")
  (path / "eval.json").write_text(json.dumps({
      "bpp": 8 * results["bytes_per_image"] / 784.,
      "estimated_bytes_per_image": results["bytes_per_image"] - .3,
      "encode_ms_per_image": .1, "decode_ms_per_image": .05, **results}))
  later = os.path.getmtime(path / "model.json") + 1
  os.utime(path / "eval.json", (later, later))
  return str(path)


def test_bench_checks_each_dataset_against_its_targets(tmp_path):
  mnist = _evaluated_dir(tmp_path / "mnist", accuracy=.9908,
                         bytes_per_image=3.14, message_bytes_per_image=8.14)
  fashion = _evaluated_dir(tmp_path / "fashion", accuracy=.9049,
                           bytes_per_image=5.5)
  result = subprocess.run(
      [sys.executable, "tools/bench_frontier.py", f"--mnist_dir={mnist}",
       f"--fashion_mnist_dir={fashion}"],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 1, result.stderr
  assert "| one-image message bytes | 8.14 | <= 10 | yes |" in result.stdout
  assert "| payload bytes per image | 5.50 | <= 6 | yes |" in result.stdout
  assert "| test accuracy | 90.49% | >= 90.5% | NO |" in result.stdout
  assert result.stdout.rstrip().endswith("targets missed: fashion_mnist")
