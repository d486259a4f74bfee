"""The codec: files and messages classify like the in-graph path; bad input
ends cleanly."""

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from tfvaeclf import codec, data, model_dir
from tfvaeclf.coding import bitstream, native
from tfvaeclf.serve.core import Core
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def digits(mnist):
  images, labels = next(iter(mnist.test.batch(12)))
  return images.numpy(), labels.numpy()


def _in_graph_predictions(loaded, images):
  outputs = loaded.model(data.to_float(images), training=False)
  return tf.argmax(outputs["logits"], -1).numpy()


@pytest.mark.slow
def test_file_classifies_exactly_like_the_in_graph_path(loaded, digits):
  images, _ = digits
  file_bytes = codec.compress_images(loaded, images)
  np.testing.assert_array_equal(codec.classify_file(loaded, file_bytes),
                                _in_graph_predictions(loaded, images))
  np.testing.assert_array_equal(
      codec.decode_latent(loaded, file_bytes).numpy(),
      loaded.model(data.to_float(images), training=False)["latent_hat"])


def test_model_dir_reloads_to_the_same_fingerprint(trained_dir, loaded):
  again = model_dir.load(trained_dir)
  assert again.fingerprint == loaded.fingerprint


def _run(argv, capsys):
  return run_cli(codec.main, argv, capsys)


def _write_pngs(directory, images):
  paths = []
  for i, image in enumerate(images):
    paths.append(os.path.join(directory, f"digit_{i}.png"))
    data.write_png(paths[-1], image)
  return paths


def test_cli_compress_then_classify(trained_dir, loaded, digits, tmp_path,
                                    capsys):
  images, _ = digits
  paths = _write_pngs(tmp_path, images)
  output = str(tmp_path / "digits.tfvc")
  code, _, err = _run(["compress", f"--model_dir={trained_dir}",
                       f"--output={output}", *paths], capsys)
  assert code in (0, None), err
  code, out, _ = _run(["classify", f"--model_dir={trained_dir}", output],
                      capsys)
  assert code in (0, None)
  names = loaded.config["class_names"]
  expected = [names[i] for i in _in_graph_predictions(loaded, images)]
  assert out.split() == expected


@pytest.fixture(scope="module")
def good_file(loaded, digits):
  return codec.compress_images(loaded, digits[0][:3])


def _bad_files(good_file):
  corrupted = bytearray(good_file)
  corrupted[-1] ^= 0x55
  return {
      "truncated": good_file[:-3],
      "corrupted": bytes(corrupted),
      "garbage": os.urandom(200),
      "empty": b"",
  }


@pytest.mark.parametrize("kind", ["truncated", "corrupted", "garbage",
                                  "empty"])
def test_bad_files_end_in_one_line_and_exit_2(trained_dir, good_file, kind,
                                              tmp_path, capsys):
  path = tmp_path / f"{kind}.tfvc"
  path.write_bytes(_bad_files(good_file)[kind])
  code, out, err = _run(["classify", f"--model_dir={trained_dir}",
                         str(path)], capsys)
  assert code == 2
  assert out == ""  # never a label for an invalid file
  assert err.startswith("error: ") and err.count("\n") == 1


def _forged(file_bytes, **changes):
  """The same file with header fields changed and a valid CRC."""
  coded = bitstream.unpack(file_bytes)
  return bitstream.pack(dataclasses.replace(coded, **changes))


@pytest.mark.parametrize("changes,message", [
    ({"fingerprint": bytes(8)}, "another model"),
    ({"latent_shape": (5, 5)}, "latents of shape"),
    ({"image_shape": (32, 32, 3)}, "images"),
])
def test_consistent_files_that_do_not_fit_the_model_are_refused(
    trained_dir, loaded, good_file, tmp_path, capsys, changes, message):
  if "fingerprint" not in changes:
    changes["fingerprint"] = loaded.codec.fingerprint
  path = tmp_path / "forged.tfvc"
  path.write_bytes(_forged(good_file, **changes))
  code, out, err = _run(["classify", f"--model_dir={trained_dir}",
                         str(path)], capsys)
  assert (code, out) == (2, "")
  assert message in err and err.count("\n") == 1


def test_a_file_of_more_images_than_the_server_takes_is_refused(
    trained_dir, loaded, good_file, tmp_path, capsys, monkeypatch):
  """The cap is the server's; the file's images are never decoded."""
  coded = bitstream.unpack(good_file)
  one_image = [stream[:1] for stream in coded.strings]
  decoded = []

  def decoder(self, strings, *args, **kwargs):
    decoded.append(len(strings))
    raise bitstream.BitstreamError("the range decoder ran")

  monkeypatch.setattr(native.IndexDecoder, "__init__", decoder)
  for count in (bitstream.MAX_IMAGES, bitstream.MAX_IMAGES + 1):
    path = tmp_path / f"{count}.tfvc"
    path.write_bytes(_forged(good_file, strings=[
        stream * count for stream in one_image]))
    code, out, err = _run(["classify", f"--model_dir={trained_dir}",
                           str(path)], capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    if count == bitstream.MAX_IMAGES:  # taken, and decoded
      assert decoded == [count] and "decoder ran" in err
    else:
      assert f"file holds {count} images, more than the 256" in err
      assert decoded == [bitstream.MAX_IMAGES]
  code, _, err = _run(["classify", f"--model_dir={trained_dir}",
                       f"--max_images={count}", str(path)], capsys)
  assert decoded[-1] == count and "decoder ran" in err  # raised: taken
  assert Core.__init__.__defaults__ == (bitstream.MAX_IMAGES,)


def test_missing_streams_are_refused(loaded, good_file):
  forged = _forged(good_file, strings=[])
  with pytest.raises(bitstream.BitstreamError):
    codec.classify_file(loaded, forged)


@pytest.mark.parametrize("size,mode", [((32, 32), "L"), ((28, 28), "RGB")])
def test_wrong_image_shape_is_refused(trained_dir, tmp_path, capsys, size,
                                      mode):
  path = tmp_path / "wrong.png"
  Image.new(mode, size).save(path)
  output = tmp_path / "out.tfvc"
  code, _, err = _run(["compress", f"--model_dir={trained_dir}",
                       f"--output={output}", str(path)], capsys)
  assert code == 2 and err.count("\n") == 1 and "wrong.png" in err
  # Trained without resizing: it says how to train a model that resizes.
  assert f"is {size[0]}x{size[1]} mode {mode}, expected 28x28 mode L" in err
  assert "retrain it with --image_size=28" in err
  assert not output.exists()  # nothing half-written


def test_missing_inputs_and_usage_errors(trained_dir, tmp_path, capsys):
  for argv in (["classify", f"--model_dir={trained_dir}",
                str(tmp_path / "absent.tfvc")],
               ["frobnicate", f"--model_dir={trained_dir}"],
               ["compress", f"--model_dir={trained_dir}", "x.png"],
               ["classify", f"--model_dir={tmp_path}", "x.tfvc"]):
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, argv


def test_decompress_needs_a_decoder(trained_dir, good_file, tmp_path,
                                    capsys):
  path = tmp_path / "digits.tfvc"
  path.write_bytes(good_file)
  code, _, err = _run(["decompress", f"--model_dir={trained_dir}",
                       f"--output={tmp_path / 'x.png'}", str(path)], capsys)
  assert code == 2 and "--decoder" in err


# -- messages ----------------------------------------------------------------

@pytest.mark.slow
def test_cli_writes_one_message_per_image_and_classify_reads_both(
    trained_dir, loaded, digits, tmp_path, capsys):
  images, _ = digits
  paths = _write_pngs(tmp_path, images[:3])
  names = loaded.config["class_names"]
  expected = [names[i] for i in _in_graph_predictions(loaded, images[:3])]
  code, _, err = _run(["compress", f"--model_dir={trained_dir}",
                       "--format=message",
                       f"--output={tmp_path / 'digit.msg'}", *paths], capsys)
  assert code is None, err
  assert sorted(p.name for p in tmp_path.glob("digit*.msg")) == [
      "digit_0.msg", "digit_1.msg", "digit_2.msg"]
  file_path = str(tmp_path / "digits.tfvc")
  assert _run(["compress", f"--model_dir={trained_dir}", "--format=file",
               f"--output={file_path}", *paths], capsys)[0] is None
  outputs = []
  for path in [file_path] + [str(tmp_path / f"digit_{i}.msg")
                             for i in range(3)]:
    code, out, _ = _run(["classify", f"--model_dir={trained_dir}", path],
                        capsys)
    assert code is None
    outputs.append(out.split())
  assert outputs == [expected] + [[name] for name in expected]
  # One image: the message is OUT itself.
  _run(["compress", f"--model_dir={trained_dir}", "--format=message",
        f"--output={tmp_path / 'one'}", paths[0]], capsys)
  assert (tmp_path / "one").read_bytes() == codec.compress_messages(
      loaded, images[:1])[0]


@pytest.fixture(scope="module")
def bad_messages(loaded, digits):
  """Ways a message can be bad, made from two real ones."""
  one, two = codec.compress_messages(loaded, digits[0][:2])
  flipped = bytearray(one)
  flipped[len(one) // 2] ^= 0x10
  # The same strings under another fingerprint's CRC.
  strings = loaded.codec.read(one).strings
  other = dataclasses.replace(loaded.codec, fingerprint=bytes(8))
  return {
      "truncated": one[:-1],
      "bit-flipped": bytes(flipped),
      "spliced": one[:len(one) // 2] + two[len(two) // 2:],
      "concatenated": one + two,
      "garbage": bytes([0x10]) + np.random.default_rng(0).bytes(20),
      "another model's": other.pack_messages(strings)[0],
  }


@pytest.mark.parametrize("kind", ["truncated", "bit-flipped", "spliced",
                                  "concatenated", "garbage",
                                  "another model's"])
def test_bad_messages_end_in_one_line_and_exit_2(
    trained_dir, bad_messages, kind, tmp_path, capsys):
  path = tmp_path / "bad.msg"
  path.write_bytes(bad_messages[kind])
  code, out, err = _run(["classify", f"--model_dir={trained_dir}",
                         str(path)], capsys)
  assert (code, out) == (2, "")
  assert err.startswith("error: ") and err.count("\n") == 1
  if kind == "another model's":
    assert "another model" in err


def test_counter_flags_that_do_not_apply_are_refused(trained_dir, digits,
                                                     tmp_path, capsys):
  (path,) = _write_pngs(tmp_path, digits[0][:1])
  for flag in ("--format=message", "--format=file"):
    code, out, err = _run(["compress", f"--model_dir={trained_dir}", flag,
                           "--first_counter=3",
                           f"--output={tmp_path / 'x'}", path], capsys)
    assert (code, out) == (2, "") and "--first_counter" in err, flag
    assert not (tmp_path / "x").exists()
