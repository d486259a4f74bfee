"""The edge runtime on real MNIST: a process without TensorFlow codes digits
that the server classifies exactly as the Keras model does."""

import os
import sys

from absl.testing import flagsaver
import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from tfvaeclf import cli, codec, data, model_dir
from tfvaeclf.coding import native
from tfvaeclf.edge import BundleError, EdgeEncoder, interpreter
from tfvaeclf.serve.bundle_server import BundleServer

from tfvaeclf import export
from tests.conftest import edge_process, train_small_joint

NUM_IMAGES = 10000  # the whole test split


@pytest.fixture(scope="session")
def good_dir(mnist, tmp_path_factory):
  """A model for which half an accuracy point means something.

  The session's small model at a tenth of its rate weight, trained on
  20000 digits: about 94% accurate (the 1-epoch session model: 78%), so
  that int8 rounding flips few decisions and 0.5 points over the whole
  test split is many times the noise.
  """
  return train_small_joint(tmp_path_factory.mktemp("good_joint"), mnist,
                           20000, lmbda=1.0)


@pytest.fixture(scope="module")
def good(good_dir):
  return model_dir.load(good_dir)


@pytest.fixture(scope="module")
def good_bundle(good, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("good_export") / "bundle")
  export.export_bundle(good, out, export.calibration_images(good.config, 500))
  return out


@pytest.fixture(scope="module")
def digits(mnist, good):
  """Test digits: uint8 images, labels, and the Keras model's predictions."""
  images, labels = next(iter(mnist.test.batch(NUM_IMAGES)))
  logits = good.model(data.to_float(images), training=False)["logits"]
  return (images.numpy(), labels.numpy(),
          tf.argmax(logits, -1).numpy())


@pytest.fixture(scope="module")
def edge_files(good_bundle, digits, tmp_path_factory):
  """The digits as PNGs, coded by TensorFlow-free processes: float, int8."""
  folder = tmp_path_factory.mktemp("digits")
  paths = []
  for i, image in enumerate(digits[0]):
    paths.append(str(folder / f"{i:05d}.png"))
    Image.fromarray(image[..., 0]).save(paths[-1])
  files = {}
  for kind, flag in (("float", []), ("int8", ["--int8"])):
    output = str(folder / f"{kind}.tfvc")
    result = edge_process("encode", f"--bundle={good_bundle}", *flag,
                           f"--output={output}", *paths)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "loaded: ['ai_edge_litert']"
    with open(output, "rb") as f:
      files[kind] = f.read()
  return files


def _codec_classify(model_dir, file_bytes, directory, capsys):
  """`python -m tfvaeclf.codec classify` in-process: (exit code, out, err)."""
  path = os.path.join(directory, "edge.input")
  with open(path, "wb") as f:
    f.write(file_bytes)
  with flagsaver.flagsaver():
    with pytest.raises(SystemExit) as exit_info:
      cli.run(codec.main, argv=["codec", "classify",
                                f"--model_dir={model_dir}",
                                # the test set: more than a served file
                                "--max_images=10000", path])
  out, err = capsys.readouterr()
  return exit_info.value.code, out, err


@pytest.mark.slow
def test_edge_process_without_tensorflow_writes_the_codec_file(
    edge_files, good, good_dir, digits, tmp_path, capsys):
  assert good.codec.unpack(edge_files["float"])
  np.testing.assert_array_equal(
      codec.classify_file(good, edge_files["float"]), digits[2])
  code, out, _ = _codec_classify(good_dir, edge_files["float"], tmp_path,
                                 capsys)
  assert code is None
  names = good.config["class_names"]
  assert out.split() == [names[i] for i in digits[2]]


@pytest.mark.slow
def test_server_saved_model_classifies_edge_file_like_keras(
    edge_files, good, good_bundle, digits):
  served = BundleServer(good_bundle, good.fingerprint)
  classes = served.classify(served.decode(edge_files["float"]))["classes"]
  np.testing.assert_array_equal(classes, digits[2])


@pytest.mark.slow
def test_int8_encoder_within_half_a_point(edge_files, good, digits):
  _, labels, keras = digits
  keras_accuracy = np.mean(keras == labels)
  int8_accuracy = np.mean(
      codec.classify_file(good, edge_files["int8"]) == labels)
  print(f"accuracy on {len(labels)} test digits: Keras "
        f"{100 * keras_accuracy:.2f}%, int8 edge {100 * int8_accuracy:.2f}%")
  assert keras_accuracy > 0.93
  assert abs(int8_accuracy - keras_accuracy) <= 0.005


@pytest.mark.slow
def test_edge_bytes_are_tfc_bytes(good, good_bundle, digits, edge_files):
  images = digits[0]
  edge = EdgeEncoder(good_bundle)
  latents = edge.latents(images)["latent"]
  in_graph = good.model.encode(data.to_float(images), training=False)
  rounded_alike = np.all(latents == np.rint(in_graph.numpy()),
                         axis=(1, 2, 3))
  print(f"TFLite's float latent rounds differently from TF's in "
        f"{np.sum(~rounded_alike)} of {len(images)} images")
  assert np.mean(rounded_alike) >= 0.999
  (ours,) = edge.code({"latent": latents})
  (tfc_strings,), _ = good.model.compress(data.to_float(images))
  same = [a == b for a, b in zip(ours, tfc_strings.numpy())]
  assert all(np.array(same)[rounded_alike])
  assert edge.encode_file(images) == edge_files["float"]
  assert edge.encode(images[:0]) == [[]]


@pytest.mark.slow
def test_tf_lite_is_the_fallback_runtime(good_bundle, digits, monkeypatch):
  images = digits[0][:100]
  with_runtime = EdgeEncoder(good_bundle, num_threads=1)
  for name in interpreter.RUNTIMES:
    monkeypatch.setitem(sys.modules, name, None)  # makes its import fail
  fallback = EdgeEncoder(good_bundle, num_threads=1)
  assert (with_runtime.runtime, fallback.runtime) == (
      "ai_edge_litert.interpreter", "tensorflow.lite")
  assert fallback.encode(images) == with_runtime.encode(images)


def test_bundle_of_another_model_is_refused(good_bundle, loaded, trained_dir,
                                            edge_files, tmp_path, capsys):
  for load in (EdgeEncoder, BundleServer):
    with pytest.raises(BundleError, match="another model"):
      load(good_bundle, expected_fingerprint=loaded.fingerprint)
  code, _, err = _codec_classify(trained_dir, edge_files["float"], tmp_path,
                                 capsys)
  assert code == 2
  assert err.count("\n") == 1 and "another model" in err


def test_edge_cli_refuses_a_bad_image_in_one_line(good_bundle, tmp_path):
  rgb = str(tmp_path / "rgb.png")
  Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(rgb)
  result = edge_process("encode", f"--bundle={good_bundle}",
                         f"--output={tmp_path / 'out.tfvc'}", rgb)
  assert result.returncode == 2, result.stderr
  assert result.stderr.count("\n") == 1
  assert result.stderr.startswith(f"error: {rgb}: is 28x28 mode RGB")
  assert not os.path.exists(tmp_path / "out.tfvc")


@pytest.mark.slow
def test_board_messages_classify_like_keras(good_bundle, good_dir, good,
                                            digits, tmp_path, capsys):
  """A board's messages (a process without TensorFlow), one per image,
  each classified by `codec classify` as the Keras model classifies it."""
  count = 12
  paths = []
  for i, image in enumerate(digits[0][:count]):
    paths.append(str(tmp_path / f"{i}.png"))
    Image.fromarray(image[..., 0]).save(paths[-1])
  result = edge_process("encode", f"--bundle={good_bundle}",
                        "--format=message", "--verbose",
                        f"--output={tmp_path / 'digit.msg'}", *paths)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "loaded: ['ai_edge_litert']"
  coder = "C" if native.available() else "numpy"
  assert f"range coding with the {coder} coder" in result.stderr
  names = good.config["class_names"]
  messages = [(tmp_path / f"digit_{i}.msg").read_bytes()
              for i in range(count)]
  assert messages == EdgeEncoder(good_bundle).encode_messages(
      digits[0][:count])
  for message, keras in zip(messages, digits[2]):
    assert len(message) == good.codec.message_size(
        [len(s[0]) for s in good.codec.read(message).strings])
    code, out, _ = _codec_classify(good_dir, message, tmp_path, capsys)
    assert (code, out.split()) == (None, [names[keras]])


@pytest.mark.slow
def test_c_and_numpy_coders_write_the_same_bytes(good_bundle, digits):
  images = digits[0][:2000]
  fast = EdgeEncoder(good_bundle, num_threads=1)
  slow = EdgeEncoder(good_bundle, num_threads=1, native_coder=False)
  assert (fast.coder, slow.coder) == (
      "C" if native.available() else "numpy", "numpy")
  assert fast.encode(images) == slow.encode(images)
  assert fast.encode_messages(images[:50]) == slow.encode_messages(
      images[:50])


@pytest.mark.slow
def test_edge_cli_refuses_a_counter_that_does_not_apply(good_bundle, digits,
                                                        tmp_path):
  png = str(tmp_path / "digit.png")
  Image.fromarray(digits[0][0, ..., 0]).save(png)
  for flag in ("--format=message", "--format=file"):
    result = edge_process("encode", f"--bundle={good_bundle}", flag,
                          "--first_counter=3", f"--output={tmp_path / 'x'}",
                          png)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "--first_counter" in (
        result.stderr)
    assert not os.path.exists(tmp_path / "x")
