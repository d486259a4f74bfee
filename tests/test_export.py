"""The exporter: bundle layout, manifest checks, SavedModel, atomicity."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import codec, data, model_dir
from tfvaeclf.coding import bundle
from tfvaeclf.coding.codec_spec import CodecSpec
from tfvaeclf.edge import BundleError, EdgeEncoder
from tfvaeclf.errors import BitstreamError
from tfvaeclf.serve.bundle_server import BundleServer

from tfvaeclf import export
from tfvaeclf.export import __main__ as export_main
from tfvaeclf.export import encoder as export_encoder
from tfvaeclf.export import server_model
from tests.conftest import SMALL_JOINT, run_cli, train_small_joint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE_FILES = [bundle.ENCODER, bundle.ENCODER_INT8, bundle.TABLES]

# Classifies files with a bundle's server side in a process where importing
# tensorflow_compression fails, as on a server with stock TensorFlow only:
# prints each file's classes on one line.
NO_TFC = r"""
import sys
import time
sys.modules["tensorflow_compression"] = None  # makes its import fail
from tfvaeclf.serve.bundle_server import BundleServer
served = BundleServer(sys.argv[1])
for path in sys.argv[2:]:
  with open(path, "rb") as f:
    print(*served.classify(served.decode(f.read()))["classes"])
try:
  import tensorflow_compression
  sys.exit("the block failed: tensorflow_compression imported")
except ImportError:
  pass
"""


def classify_without_tfc(bundle_dir, files, directory):
  """The classes of each file (bytes), from `NO_TFC` in a subprocess."""
  paths = []
  for i, file_bytes in enumerate(files):
    paths.append(os.path.join(directory, f"{i}.tfvc"))
    with open(paths[-1], "wb") as f:
      f.write(file_bytes)
  result = subprocess.run([sys.executable, "-c", NO_TFC, bundle_dir, *paths],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  return [np.array(line.split(), int)
          for line in result.stdout.splitlines()]


def _export_cli(argv, capsys):
  return run_cli(export_main.main, argv, capsys)


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


@pytest.mark.slow
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
      "inputs": {"latent_hat": {
          "dtype": "float32",
          "shape": [None, *model.latent_shape,
                    model.config.latent_channels]}},
      "outputs": ["classes", "probabilities"]}
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


def test_server_classifies_like_keras(bundle_dir, loaded, mnist):
  images, _ = next(iter(mnist.test.batch(64)))
  floats = data.to_float(images)
  outputs = loaded.model(floats, training=False)
  served = BundleServer(bundle_dir, loaded.fingerprint)
  assert served.manifest["model"]["fingerprint"] == loaded.fingerprint.hex()
  assert served.class_names == list("0123456789")
  latent_hat = served.decode(codec.compress_images(loaded, images.numpy()))
  np.testing.assert_array_equal(latent_hat, outputs["latent_hat"].numpy())
  predicted = served.classify(latent_hat)
  np.testing.assert_array_equal(predicted["classes"],
                                tf.argmax(outputs["logits"], -1).numpy())
  np.testing.assert_allclose(predicted["probabilities"],
                             tf.nn.softmax(outputs["logits"]).numpy(),
                             atol=1e-6)
  # The SavedModel alone, as TF Serving runs it.
  saved = tf.saved_model.load(os.path.join(bundle_dir, bundle.SERVER_DIR))
  signature = saved.signatures["serving_default"]
  assert list(signature.structured_input_signature[1]) == ["latent_hat"]
  np.testing.assert_array_equal(
      signature(latent_hat=latent_hat)["classes"].numpy(),
      predicted["classes"])
  assert "reconstruct" not in saved.signatures  # no decoder
  assert not served.has_decoder
  with pytest.raises(BundleError, match="no decoder"):
    served.reconstruct(latent_hat)


@pytest.mark.slow
def test_server_side_runs_without_tfc(bundle_dir, loaded, mnist, tmp_path):
  """Board-made and codec-made files classify as Keras does, in a process
  that cannot import tensorflow_compression."""
  images, _ = next(iter(mnist.test.batch(64)))
  images = images.numpy()
  floats = data.to_float(images)
  keras = tf.argmax(loaded.model(floats)["logits"], -1).numpy()
  edge = EdgeEncoder(bundle_dir)
  rounded_alike = np.all(edge.latents(images)["latent"] == np.rint(
      loaded.model.encode(floats)), axis=(1, 2, 3))
  assert np.mean(rounded_alike) >= .95
  board, codec_made = classify_without_tfc(bundle_dir, [
      edge.encode_file(images), codec.compress_images(loaded, images)],
      str(tmp_path))
  np.testing.assert_array_equal(board[rounded_alike], keras[rounded_alike])
  np.testing.assert_array_equal(codec_made, keras)


def test_server_refuses_bad_files_in_one_line(bundle_dir, loaded, mnist):
  served = BundleServer(bundle_dir)
  images, _ = next(iter(mnist.test.batch(2)))
  file_bytes = codec.compress_images(loaded, images.numpy())
  cases = {"truncated": file_bytes[:-3],
           "bit-flipped": file_bytes[:20] + bytes([file_bytes[20] ^ 4])
                          + file_bytes[21:],
           "empty strings": loaded.codec.pack([[b"", b""]])}
  for name, bad in cases.items():
    with pytest.raises(BitstreamError) as excinfo:
      served.decode(bad)
    assert "\n" not in str(excinfo.value), name


def test_server_refuses_a_bundle_whose_server_takes_strings(bundle_dir,
                                                            tmp_path):
  copy = _copy(bundle_dir, tmp_path)
  path = os.path.join(copy, bundle.MANIFEST)
  with open(path) as f:
    manifest = json.load(f)
  for signature in manifest["server"]["signatures"].values():
    signature["inputs"] = ["latent"]  # as tfvaeclf wrote it before
  with open(path, "w") as f:
    json.dump(manifest, f)
  with pytest.raises(BundleError) as excinfo:
    BundleServer(copy)
  _assert_one_line(excinfo, "decodes strings with TFC", "export the bundle")


def test_server_reconstructs_where_the_model_has_a_decoder(tmp_path, mnist):
  model = model_dir.build_model({"model": "joint", "model_config": {
      **SMALL_JOINT, "decoder": True, "gamma": 1.0}})
  model.coder.freeze()
  images, _ = next(iter(mnist.test.batch(8)))
  latent_hat = model(data.to_float(images))["latent_hat"]
  shape = latent_hat.shape[1:].as_list()
  signatures = server_model.save(model, shape, str(tmp_path / "server"))
  assert signatures["reconstruct"] == {
      "inputs": {"latent_hat": {"dtype": "float32", "shape": [None, *shape]}},
      "outputs": ["images"]}
  x_hat = model.reconstruct(latent_hat)
  saved = tf.saved_model.load(str(tmp_path / "server"))
  decoded = saved.signatures["reconstruct"](latent_hat=latent_hat)["images"]
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
  loaders = [EdgeEncoder] if name in EDGE_FILES else []
  if name.startswith("server/") or name == bundle.TABLES:
    loaders.append(BundleServer)
  for load in loaders:
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
    BundleServer(copy)
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


def _list_outside(copy, name, outside):
  """Lists `outside` (a file) in the copy's manifest under `name`, with its
  true sha256 and size, as a forger would."""
  manifest_path = os.path.join(copy, bundle.MANIFEST)
  with open(manifest_path) as f:
    manifest = json.load(f)
  (entry,) = bundle.file_digests(os.path.dirname(outside)).values()
  manifest["files"][name] = entry
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)


@pytest.mark.parametrize("name", ["edge/../../outside/x.tflite",
                                  "/tmp/outside/x.tflite", "edge//x.tflite",
                                  "edge/./x.tflite", "edge\\..\\x.tflite"])
def test_names_outside_the_bundle_are_refused(bundle_dir, tmp_path, name):
  copy = _copy(bundle_dir, tmp_path)
  os.makedirs(tmp_path / "outside")
  shutil.copy(os.path.join(copy, bundle.ENCODER), tmp_path / "outside")
  _list_outside(copy, name, str(tmp_path / "outside" / "encoder.tflite"))
  for load in (EdgeEncoder, BundleServer):
    with pytest.raises(BundleError) as excinfo:
      load(copy)
    _assert_one_line(excinfo, "outside the bundle", repr(name))


@pytest.mark.parametrize("link", [bundle.ENCODER, bundle.EDGE_DIR])
def test_links_out_of_the_bundle_are_refused(bundle_dir, tmp_path, link):
  """A listed file, or its dir, linked to an identical copy outside."""
  copy = _copy(bundle_dir, tmp_path)
  inside = os.path.join(copy, *link.split("/"))
  outside = str(tmp_path / "outside")
  shutil.move(inside, outside)
  os.symlink(outside, inside)
  with pytest.raises(BundleError) as excinfo:
    EdgeEncoder(copy)
  _assert_one_line(excinfo, "symbolic link out of the bundle")
  # A link inside the bundle is no escape.
  os.remove(inside)
  moved = os.path.join(copy, "moved")
  shutil.move(outside, moved)
  os.symlink(moved, inside)
  assert EdgeEncoder(copy).image_shape == (28, 28, 1)


def test_board_needs_only_the_edge_files(bundle_dir, tmp_path):
  copy = _copy(bundle_dir, tmp_path)
  shutil.rmtree(os.path.join(copy, bundle.SERVER_DIR))
  assert EdgeEncoder(copy).image_shape == (28, 28, 1)


def test_bundle_of_another_model_is_refused(bundle_dir, loaded):
  other = bytes(8)
  for load in (EdgeEncoder, BundleServer):
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_residual_split_serves_the_boards_files_like_keras(mnist, tmp_path,
                                                            capsys):
  """A ResNet stem and stage on the board (batch norm folded into its int8
  convolutions) and residual stages on the server: what the board sends
  decodes to Keras' latent and gets Keras' classes."""
  trained = train_small_joint(
      tmp_path / "run", mnist, 1000, encoder_blocks=1, filters=(4, 8),
      classifier_filters=(8,), classifier_units=())
  loaded = model_dir.load(trained)
  out = str(tmp_path / "bundle")
  code, _, err = run_cli(export_main.main, [
      f"--model_dir={trained}", f"--out={out}",
      "--calibration_examples=100"], capsys)
  assert code is None, err
  images = next(iter(mnist.test.batch(64)))[0].numpy()
  outputs = loaded.model(data.to_float(images), training=False)
  edge = EdgeEncoder(out)
  served = BundleServer(out, loaded.fingerprint)
  latent_hat = served.decode(edge.encode_file(images))
  alike = np.all(latent_hat == outputs["latent_hat"].numpy(), axis=(1, 2, 3))
  assert np.mean(alike) >= .9  # int8 and float32 may round apart
  np.testing.assert_array_equal(
      served.classify(latent_hat)["classes"][alike],
      tf.argmax(outputs["logits"], -1).numpy()[alike])


def test_fuzzed_manifests_load_or_fail_in_one_line(bundle_dir, tmp_path):
  """Byte mutations of a real manifest, and well-formed ones naming hostile
  files: each read ends, fast, loaded or refused in one line."""
  copy = _copy(bundle_dir, tmp_path)
  path = os.path.join(copy, bundle.MANIFEST)
  with open(path, "rb") as f:
    original = f.read()
  manifest = json.loads(original)
  listed = sorted(manifest["files"])
  rng = np.random.default_rng(29)
  hostile = ["..", "/", "edge/\x00.tflite", "edge/" + "a" * 5000, "~/x",
             "edge/..", "edge\\x", "", ".", "edge/./../edge/encoder.tflite"]
  cases = []
  for i in range(300):
    data = bytearray(original)
    for _ in range(int(rng.integers(1, 4))):
      data[int(rng.integers(len(data)))] = int(rng.integers(256))
    cases.append(bytes(data))
  for name in hostile:
    forged = json.loads(original)
    forged["files"][name] = forged["files"].pop(listed[0])
    cases.append(json.dumps(forged).encode())
  for data in cases:
    with open(path, "wb") as f:
      f.write(data)
    start = time.perf_counter()
    try:
      bundle.read_manifest(copy, bundle.EDGE_DIR)
    except BundleError as e:
      assert "\n" not in str(e) and str(e), repr(data[:80])
    assert time.perf_counter() - start < 1.
