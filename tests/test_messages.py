"""One-image messages on real models: they decode to exactly what files
decode to, for every coder (one stream, two, dithered); a dithered sender's
counter picks the dither; bad messages are refused in one line."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import codec, data, model_dir
from tfvaeclf.coding import bitstream
from tfvaeclf.edge import EdgeEncoder

from tfvaeclf import export
from tests.conftest import (REPO, run_cli, train_small_joint,
                            train_small_rdc)

NUM_IMAGES = 12


@pytest.fixture(scope="module")
def images(mnist):
  return next(iter(mnist.test.batch(NUM_IMAGES)))[0].numpy()


@pytest.fixture(scope="module")
def context_dir(mnist, tmp_path_factory):
  """The small joint model with the channel-context coder: two streams."""
  return train_small_joint(tmp_path_factory.mktemp("context"), mnist, 1000,
                           entropy_model="context")


@pytest.fixture(scope="module")
def rdc_dir(mnist, classifier_dir, tmp_path_factory):
  return train_small_rdc(tmp_path_factory.mktemp("rdc"), mnist,
                         classifier_dir, lambda_cls=.01, seed=0)


@pytest.fixture(scope="module")
def models(loaded, context_dir, rdc_dir):
  """A loaded model per coder: factorized, context, dithered."""
  return {"factorized": loaded, "context": model_dir.load(context_dir),
          "dithered": model_dir.load(rdc_dir)}


@pytest.mark.parametrize("kind", ["factorized", "context", "dithered"])
@pytest.mark.slow
def test_messages_decode_exactly_like_the_file(models, images, kind):
  loaded = models[kind]
  file_bytes = codec.compress_images(loaded, images)
  messages = codec.compress_messages(loaded, images)
  assert len(messages) == NUM_IMAGES
  assert all(not bitstream.is_file(m) for m in messages)
  from_file = codec.decode_latent(loaded, file_bytes).numpy()
  from_messages = np.concatenate(
      [codec.decode_latent(loaded, m).numpy() for m in messages])
  np.testing.assert_array_equal(from_messages, from_file)
  np.testing.assert_array_equal(
      np.concatenate([codec.classify_file(loaded, m) for m in messages]),
      codec.classify_file(loaded, file_bytes))
  # The same strings as the file's, image by image.
  file_strings = loaded.codec.unpack(file_bytes).strings
  for i, message in enumerate(messages):
    coded = loaded.codec.read(message)
    assert [s[0] for s in coded.strings] == [s[i] for s in file_strings]
    assert coded.dither_index == (i if kind == "dithered" else 0)


@pytest.mark.parametrize("kind", ["factorized", "context", "dithered"])
@pytest.mark.slow
def test_message_overhead(models, images, kind):
  loaded = models[kind]
  for message in codec.compress_messages(loaded, images):
    coded = loaded.codec.read(message)
    lengths = [len(stream[0]) for stream in coded.strings]
    counter = coded.dither_index if loaded.codec.dithered else None
    assert len(message) == loaded.codec.message_size(lengths, counter)
    # One stream: kind byte and CRC (and a counter below 128): 5 or 6.
    # Two: the first string's length too, one byte for a small z.
    assert len(message) - sum(lengths) <= (5 if kind == "factorized" else 6)
    assert len(message) < loaded.codec.file_size(lengths) - 25


@pytest.mark.slow
def test_a_message_counter_picks_the_dither(models, images):
  """Message c is coded, and decoded, with dither index c: consecutive
  messages of one image differ, and each decodes to within half a step of
  the encoder's output (another dither would miss it by up to 1.5)."""
  loaded = models["dithered"]
  y = loaded.model.encode(data.to_float(images)).numpy()
  image = np.repeat(images[:1], 4, axis=0)
  messages = codec.compress_messages(loaded, image, first_counter=1000)
  assert [loaded.codec.read(m).dither_index for m in messages] == [
      1000, 1001, 1002, 1003]
  decoded = [codec.decode_latent(loaded, m).numpy()[0] for m in messages]
  for latent in decoded:
    assert np.abs(latent - y[0]).max() <= .5 + 1e-6
  assert len({latent.tobytes() for latent in decoded}) == 4
  # Decoding message 1001 with dither index 1000 shifts every element.
  wrong = loaded.model.decompress(
      [tf.constant([loaded.codec.read(messages[1]).strings[0][0]])],
      loaded.codec.latent_shape, first_index=1000).numpy()[0]
  assert np.abs(wrong - decoded[1]).min() > 0
  for counter, message in zip((1000, 1001), messages):
    later = codec.compress_messages(loaded, images[:1], counter)
    assert later == [message]


@pytest.mark.slow
def test_counters_are_checked(models, images):
  dithered, plain = models["dithered"].codec, models["factorized"].codec
  with pytest.raises(ValueError, match="counter"):
    dithered.pack_message([b"x"])
  with pytest.raises(ValueError, match="counter"):
    dithered.pack_messages([[b"x", b"y"]], bitstream.MAX_COUNTER)
  with pytest.raises(ValueError, match="dithered"):
    plain.pack_message([b"x"], counter=0)
  assert dithered.message_size([3]) == 3 + 6
  assert plain.message_size([3]) == 3 + 5


@pytest.mark.slow
def test_a_message_of_another_model_is_refused(models, images):
  for sender, receiver in (("factorized", "context"),
                           ("context", "factorized"),
                           ("dithered", "factorized"),
                           ("factorized", "dithered")):
    (message,) = codec.compress_messages(models[sender], images[:1])
    with pytest.raises(bitstream.BitstreamError, match="another model"):
      codec.classify_file(models[receiver], message)


@pytest.mark.slow
def test_every_bit_flip_of_a_real_message_is_refused(models, images):
  for loaded in models.values():
    (message,) = codec.compress_messages(loaded, images[:1])
    for position in range(8 * len(message)):
      flipped = bytearray(message)
      flipped[position // 8] ^= 1 << (position % 8)
      with pytest.raises(bitstream.BitstreamError) as e:
        codec.classify_file(loaded, bytes(flipped))
      assert "\n" not in str(e.value)
    for cut in range(len(message)):
      with pytest.raises(bitstream.BitstreamError):
        codec.classify_file(loaded, message[:cut])


@pytest.mark.slow
def test_dithered_cli_continues_a_sequence(rdc_dir, models, images, tmp_path,
                                           capsys):
  loaded = models["dithered"]
  paths = []
  for i, image in enumerate(images[:3]):
    paths.append(str(tmp_path / f"digit_{i}.png"))
    data.write_png(paths[-1], image)
  code, _, err = run_cli(codec.main, [
      "compress", f"--model_dir={rdc_dir}", "--format=message",
      "--first_counter=41", f"--output={tmp_path / 'm.msg'}", *paths], capsys)
  assert code is None, err
  names = loaded.config["class_names"]
  expected = codec.classify_file(loaded,
                                 codec.compress_images(loaded, images[:3]))
  for i in range(3):
    message = (tmp_path / f"m_{i}.msg").read_bytes()
    assert loaded.codec.read(message).dither_index == 41 + i
    code, out, _ = run_cli(codec.main, [
        "classify", f"--model_dir={rdc_dir}", str(tmp_path / f"m_{i}.msg")],
        capsys)
    assert code is None and out.split() == [names[expected[i]]]
  # decompress reads messages too, with their counter's dither.
  code, _, err = run_cli(codec.main, [
      "decompress", f"--model_dir={rdc_dir}", f"--output={tmp_path / 'x.png'}",
      str(tmp_path / "m_2.msg")], capsys)
  assert code is None, err
  np.testing.assert_array_equal(
      data.read_image_files([str(tmp_path / "x.png")], images.shape[1:]),
      codec.reconstruct_file(loaded, (tmp_path / "m_2.msg").read_bytes()))
  code, out, err = run_cli(codec.main, [
      "compress", f"--model_dir={rdc_dir}", "--format=message",
      f"--first_counter={bitstream.MAX_COUNTER}",
      f"--output={tmp_path / 'n.msg'}", *paths], capsys)
  assert (code, out) == (2, "") and "counter" in err
  assert err.count("\n") == 1 and not (tmp_path / "n_0.msg").exists()


@pytest.mark.slow
def test_dithered_board_messages_take_their_counters(models, images,
                                                     tmp_path_factory):
  """The board's message c uses dither index c, as the codec's does."""
  loaded = models["dithered"]
  bundle = str(tmp_path_factory.mktemp("rdc_export") / "bundle")
  export.export_bundle(loaded, bundle,
                       export.calibration_images(loaded.config, 100))
  board = EdgeEncoder(bundle).encode_messages(images, first_counter=7)
  ours = codec.compress_messages(loaded, images, first_counter=7)
  # Float TFLite may round y + u the other way from TF (see test_export_rdc).
  assert np.mean([a == b for a, b in zip(board, ours)]) >= .9
  y = loaded.model.encode(data.to_float(images)).numpy()
  for i, message in enumerate(board):
    assert loaded.codec.read(message).dither_index == 7 + i
    latent = codec.decode_latent(loaded, message).numpy()[0]
    assert np.abs(latent - y[i]).max() <= .5 + 1e-3


def test_bench_messages_reports_a_real_model(trained_dir, loaded):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, "tools", "bench_messages.py"),
       "--images=300", trained_dir], capture_output=True, text=True,
      cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  row = next(line for line in result.stdout.splitlines()
             if line.startswith(f"| {trained_dir} |"))
  cells = row.strip("|").split("|")
  payload, message, overhead, one_file, per_image = map(float, cells[4:9])
  print(result.stdout)
  assert int(cells[3]) == 300
  # The small model's one stream: 5 bytes of framing on every message.
  assert message == pytest.approx(payload + 5) and overhead == 5
  assert one_file > message + 25 and per_image < one_file
