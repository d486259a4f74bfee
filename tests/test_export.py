"""The exporter: bundle layout, manifest checks, SavedModel, atomicity."""

import json
import os
import shutil
import subprocess
import sys

from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import cli, data, model_dir
from tfvaeclf.codec_spec import CodecSpec
from tfvaeclf.edge import BundleError, EdgeEncoder, bundle

import export
from export import __main__ as export_main
from export import encoder as export_encoder
from export import server
from tests.conftest import SMALL_JOINT, run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE_FILES = [bundle.ENCODER, bundle.ENCODER_INT8, bundle.TABLES]


def _export_cli(argv, capsys):
  return run_cli(export_main.main, argv, capsys)


@pytest.fixture(scope="module")
def bundle_dir(trained_dir, tmp_path_factory):
  """The session's small model, exported once through the CLI."""
  out = str(tmp_path_factory.mktemp("export") / "bundle")
  with flagsaver.flagsaver():
    with pytest.raises(SystemExit) as exit_info:
      cli.run(export_main.main, argv=[
          "export", f"--model_dir={trained_dir}", f"--out={out}",
          "--calibration_examples=100"])
  assert exit_info.value.code is None
  return out


@pytest.fixture(scope="module")
def manifest(bundle_dir):
  with open(os.path.join(bundle_dir, bundle.MANIFEST)) as f:
    return json.load(f)


def _copy(bundle_dir, tmp_path):
  copy = str(tmp_path / "copy")
  shutil.copytree(bundle_dir, copy)
  return copy


def _assert_one_line(excinfo, *needles):
  message = str(excinfo.value)
  assert "\n" not in message
  for needle in needles:
    assert needle in message, message


def test_bundle_layout_and_manifest(bundle_dir, manifest, loaded):
  model = loaded.model
  files = sorted(
      os.path.relpath(os.path.join(root, name), bundle_dir)
      for root, _, names in os.walk(bundle_dir) for name in names)
  assert files == sorted([bundle.MANIFEST, *manifest["files"]])
  assert set(EDGE_FILES) | {"server/saved_model.pb",
                            "server/variables/variables.index"} <= set(files)
  assert manifest["files"] == bundle.file_digests(bundle_dir)
  assert manifest["model"] == {
      "name": "joint", "fingerprint": loaded.fingerprint.hex(),
      "dataset": "mnist", "class_names": list("0123456789")}
  assert manifest["image_shape"] == [28, 28, 1]
  assert manifest["latent_shape"] == list(model.latent_shape)
  # The board's files carry the encoder side's identity, not the model's.
  assert CodecSpec.from_manifest(manifest) == loaded.codec
  assert manifest["streams"] == [{
      "name": "latent", "tables": "channel", "dtype": "int32",
      "shape": [*model.latent_shape, model.config.latent_channels]}]
  assert manifest["versions"]["tensorflow-compression"] == "2.14.1"
  assert manifest["server"]["signatures"]["serving_default"] == {
      "inputs": ["latent"], "outputs": ["classes", "probabilities"]}
  with np.load(os.path.join(bundle_dir, bundle.TABLES)) as npz:
    for name, table in model.coder.tables().items():
      np.testing.assert_array_equal(npz[f"latent/{name}"], table)
    assert int(npz["latent/coding_rank"]) == 3
    assert int(npz["latent/precision"]) == 16


def test_int8_encoder_is_full_integer(bundle_dir, manifest):
  encoders = manifest["edge"]["encoders"]
  assert encoders[bundle.ENCODER]["inputs"]["images"]["dtype"] == "float32"
  int8 = encoders[bundle.ENCODER_INT8]
  assert int8["inputs"]["images"]["dtype"] == "uint8"
  # The sample spans black to white, so raw pixels are the input as is.
  assert int8["inputs"]["images"]["quantization"] == {
      "scale": pytest.approx(1 / 255), "zero_point": 0}
  assert int8["outputs"]["latent"]["dtype"] == "int8"
  interpreter = tf.lite.Interpreter(
      model_path=os.path.join(bundle_dir, bundle.ENCODER_INT8))
  dtypes = {np.dtype(t["dtype"]).name
            for t in interpreter.get_tensor_details()}
  assert dtypes <= {"uint8", "int8", "int32"}  # int32: conv biases
  sizes = {name: entry["size"] for name, entry in manifest["files"].items()}
  assert sizes[bundle.ENCODER_INT8] < sizes[bundle.ENCODER] / 2


def test_server_signature_classifies_like_keras(bundle_dir, loaded, mnist):
  images, _ = next(iter(mnist.test.batch(64)))
  floats = data.to_float(images)
  (strings,), _ = loaded.model.compress(floats)
  saved, manifest = server.load(bundle_dir, loaded.fingerprint)
  assert manifest["model"]["fingerprint"] == loaded.fingerprint.hex()
  signature = saved.signatures["serving_default"]
  assert list(signature.structured_input_signature[1]) == ["latent"]
  outputs = signature(latent=strings)
  logits = loaded.model(floats, training=False)["logits"]
  np.testing.assert_array_equal(outputs["classes"].numpy(),
                                tf.argmax(logits, -1).numpy())
  np.testing.assert_allclose(outputs["probabilities"].numpy(),
                             tf.nn.softmax(logits).numpy(), atol=1e-6)
  assert "reconstruct" not in saved.signatures  # no decoder


def test_server_reconstructs_where_the_model_has_a_decoder(tmp_path, mnist):
  model = model_dir.build_model({"model": "joint", "model_config": {
      **SMALL_JOINT, "decoder": True, "gamma": 1.0}})
  model.coder.freeze()
  signatures = server.save(model, CodecSpec.from_model(model),
                           str(tmp_path / "server"))
  assert signatures["reconstruct"] == {"inputs": ["latent"],
                                       "outputs": ["images"]}
  images, _ = next(iter(mnist.test.batch(8)))
  strings, latent_shape = model.compress(data.to_float(images))
  x_hat = model.reconstruct(model.decompress(strings, latent_shape))
  saved = tf.saved_model.load(str(tmp_path / "server"))
  decoded = saved.signatures["reconstruct"](latent=strings[0])["images"]
  assert decoded.dtype == tf.uint8
  np.testing.assert_array_equal(
      decoded.numpy(), np.round(x_hat.numpy() * 255).astype(np.uint8))


@pytest.mark.parametrize("name", EDGE_FILES + ["server/saved_model.pb"])
def test_altered_file_is_refused(bundle_dir, tmp_path, name):
  copy = _copy(bundle_dir, tmp_path)
  path = os.path.join(copy, name)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 1]))
  load = server.load if name.startswith("server/") else EdgeEncoder
  with pytest.raises(BundleError) as excinfo:
    load(copy)
  _assert_one_line(excinfo, name, "does not match the manifest")


def test_missing_file_is_refused(bundle_dir, tmp_path):
  copy = _copy(bundle_dir, tmp_path)
  os.remove(os.path.join(copy, bundle.ENCODER_INT8))
  with pytest.raises(BundleError) as excinfo:
    EdgeEncoder(copy)
  _assert_one_line(excinfo, bundle.ENCODER_INT8, "missing")
  shutil.rmtree(os.path.join(copy, "server", "variables"))
  with pytest.raises(BundleError) as excinfo:
    server.load(copy)
  _assert_one_line(excinfo, "server/variables/", "missing")
  manifest_path = os.path.join(copy, bundle.MANIFEST)
  with open(manifest_path, "r+") as f:
    f.truncate(100)
  with pytest.raises(BundleError) as excinfo:
    EdgeEncoder(copy)
  _assert_one_line(excinfo, manifest_path, "unreadable")
  os.remove(manifest_path)
  with pytest.raises(BundleError) as excinfo:
    EdgeEncoder(copy)
  _assert_one_line(excinfo, "not a tfvaeclf bundle")


def test_board_needs_only_the_edge_files(bundle_dir, tmp_path):
  copy = _copy(bundle_dir, tmp_path)
  shutil.rmtree(os.path.join(copy, bundle.SERVER_DIR))
  assert EdgeEncoder(copy).image_shape == (28, 28, 1)


def test_bundle_of_another_model_is_refused(bundle_dir, loaded):
  other = bytes(8)
  for load in (EdgeEncoder, server.load):
    with pytest.raises(BundleError) as excinfo:
      load(bundle_dir, expected_fingerprint=other)
    _assert_one_line(excinfo, "another model", loaded.fingerprint.hex())


def test_edge_cli_error_is_one_line(bundle_dir, tmp_path):
  copy = _copy(bundle_dir, tmp_path)
  os.remove(os.path.join(copy, bundle.TABLES))
  image = str(tmp_path / "digit.png")
  data.write_png(image, np.zeros((28, 28), np.uint8))
  result = subprocess.run(
      [sys.executable, "-m", "tfvaeclf.edge", "encode", f"--bundle={copy}",
       f"--output={tmp_path / 'out.tfvc'}", image],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1
  assert result.stderr.startswith("error: ") and "missing" in result.stderr
  assert not os.path.exists(tmp_path / "out.tfvc")


def test_export_cli_errors_are_one_line(tmp_path, trained_dir, capsys):
  code, _, err = _export_cli([f"--model_dir={tmp_path / 'none'}",
                              f"--out={tmp_path / 'b'}"], capsys)
  assert code == 2 and err.count("\n") == 1 and "model dir" in err
  (tmp_path / "taken").mkdir()
  code, _, err = _export_cli([f"--model_dir={trained_dir}",
                              f"--out={tmp_path / 'taken'}",
                              "--calibration_examples=10"], capsys)
  assert code == 2 and err.count("\n") == 1 and "is not a bundle" in err


def test_failed_export_leaves_nothing(loaded, bundle_dir, tmp_path,
                                      monkeypatch):
  original = export_encoder.convert
  old = _copy(bundle_dir, tmp_path)
  with open(os.path.join(old, bundle.MANIFEST)) as f:
    old_manifest = f.read()

  def fail_on_int8(encode_streams, image_shape, calibration_images=None):
    if calibration_images is not None:
      raise RuntimeError("conversion failed")
    return original(encode_streams, image_shape, calibration_images)

  monkeypatch.setattr(export_encoder, "convert", fail_on_int8)
  calibration = np.zeros((2, 28, 28, 1), np.float32)
  for out in (tmp_path / "new", old):
    with pytest.raises(RuntimeError, match="conversion failed"):
      export.export_bundle(loaded, str(out), calibration)
  # No half-written bundle, no staging dir; the old bundle is untouched.
  assert sorted(os.listdir(tmp_path)) == ["copy"]
  with open(os.path.join(old, bundle.MANIFEST)) as f:
    assert f.read() == old_manifest
  assert bundle.read_manifest(old, bundle.EDGE_DIR)
