"""Classical-codec baselines: real round trips, and payload counting."""

import csv
import json
import os
import struct
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tfvaeclf import baselines, data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_DIR = os.path.join(REPO, "tests", "data", "cifar10")


@pytest.fixture(scope="module")
def digits(mnist):
  return np.stack([x for x, _ in mnist.test.take(3).as_numpy_iterator()])


@pytest.fixture(scope="module")
def photos():
  names = sorted(os.listdir(CIFAR_DIR))[:2]
  return np.stack([np.asarray(Image.open(os.path.join(CIFAR_DIR, n)))
                   for n in names])


@pytest.mark.parametrize("name", sorted(baselines.CODECS))
@pytest.mark.slow
def test_quality_sweep_trades_bytes_for_fidelity(name, digits, photos):
  codec = baselines.CODECS[name]
  for images in (digits, photos):
    low = baselines.measure(codec, images, codec.qualities[0])
    high = baselines.measure(codec, images, codec.qualities[-1])
    assert low["bytes_per_image"] < high["bytes_per_image"]
    assert low["payload_bytes_per_image"] < high["payload_bytes_per_image"]
    assert 12 < low["psnr"] < high["psnr"]
    for row in (low, high):
      assert 0 < row["payload_bytes_per_image"] < row["bytes_per_image"]
      assert row["bpp"] == pytest.approx(
          8 * row["bytes_per_image"] / (images.shape[1] * images.shape[2]))


@pytest.mark.parametrize("name", sorted(baselines.CODECS))
def test_decoded_images_have_the_input_shape(name, digits, photos):
  codec = baselines.CODECS[name]
  for images in (digits[:1], photos[:1]):
    middle = codec.qualities[len(codec.qualities) // 2]
    files, decoded = baselines.code_images(codec, images, middle)
    assert decoded.shape == images.shape and decoded.dtype == np.uint8
    assert all(isinstance(f, bytes) and f for f in files)


@pytest.mark.parametrize("name", ["jpeg", "av1"])
def test_images_coded_in_parallel_come_back_in_order(name, digits, photos):
  """Each file and decoded image is the one the image gets coded alone:
  AV1's batches (one all-key-frame stream) included, grey and colour, at
  both ends of the sweep."""
  codec = baselines.CODECS[name]
  for images in (digits, photos):
    for quality in (codec.qualities[0], codec.qualities[-1]):
      files, decoded = baselines.code_images(codec, images, quality)
      assert len(set(files)) == len(images)
      for image, data, out in zip(images, files, decoded):
        assert data == codec.encode(image, quality)
        np.testing.assert_array_equal(out, codec.decode(data, image.shape))


def test_av1_batches_split_at_temporal_delimiters():
  obu = lambda kind, body: bytes([kind << 3 | 2, len(body)]) + body
  first = obu(2, b"") + obu(1, bytes(12)) + obu(6, bytes(40))
  second = obu(2, b"") + obu(1, bytes(12)) + obu(6, bytes(9))
  assert baselines._av1_temporal_units(first + second) == [first, second]


def test_jpeg_payload_is_the_scan_data_only():
  segment = lambda marker, body: (b"\xff" + bytes([marker]) +
                                  struct.pack(">H", len(body) + 2) + body)
  scan = b"\x12\xff\x00\x34\xff\xd3\x56"  # a stuffed byte and a restart
  jpeg = (b"\xff\xd8" + segment(0xDB, bytes(65)) + segment(0xC4, bytes(30))
          + segment(0xDA, bytes(8)) + scan + b"\xff\xd9")
  assert baselines._jpeg_payload(jpeg) == len(scan)


def test_webp_payload_drops_container_and_frame_header():
  vp8 = bytes(10) + bytes(range(40))
  webp = (b"RIFF" + struct.pack("<I", 4 + 8 + len(vp8)) + b"WEBP" +
          b"VP8 " + struct.pack("<I", len(vp8)) + vp8)
  assert baselines._webp_payload(webp) == 40


def test_hevc_payload_counts_only_slices():
  nal = lambda kind, body: b"\x00\x00\x00\x01" + bytes(
      [kind << 1, 1]) + body
  stream = (nal(32, bytes(20)) + nal(33, bytes(30)) + nal(34, bytes(5)) +
            nal(39, bytes(2000)) + nal(19, bytes(77)) + nal(1, bytes(9)))
  assert baselines._hevc_payload(stream) == 77 + 9


def test_av1_payload_counts_only_picture_obus():
  obu = lambda kind, body: bytes([kind << 3 | 2, len(body)]) + body
  stream = obu(2, b"") + obu(1, bytes(12)) + obu(6, bytes(40)) + obu(
      5, bytes(7))
  assert baselines._av1_payload(stream) == 40


def test_j2k_payload_counts_tile_part_data():
  tile_data = bytes(50)
  tile_header = b"\xff\x90" + struct.pack(">HHIBB", 10, 0, 0, 0, 1)
  sot_length = len(tile_header) + 2 + len(tile_data)
  tile_header = b"\xff\x90" + struct.pack(">HHIBB", 10, 0, sot_length, 0, 1)
  stream = (b"\xff\x4f" + b"\xff\x51" + bytes(39) + tile_header +
            b"\xff\x93" + tile_data + b"\xff\xd9")
  assert baselines._j2k_payload(stream) == 50


def test_missing_ffmpeg_is_one_line(monkeypatch, digits):
  monkeypatch.setattr(baselines.shutil, "which", lambda name: None)
  with pytest.raises(baselines.BaselineUnavailableError,
                     match="apt-get install ffmpeg"):
    baselines.code_images(baselines.CODECS["hevc"], digits[:1], 30)


@pytest.mark.slow
def test_rate_table_tool_writes_rows_that_match_the_files(tmp_path, digits):
  out = tmp_path / "rates.csv"
  result = subprocess.run(
      [sys.executable, "tools/baselines.py", "--codecs=jpeg,webp",
       "--max_examples=3", f"--out={out}"], cwd=REPO, capture_output=True,
      text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out) as f:
    rows = list(csv.DictReader(f))
  assert len(rows) == len(baselines.CODECS["jpeg"].qualities) + len(
      baselines.CODECS["webp"].qualities)
  assert all(row["dataset"] == "mnist" for row in rows)
  assert "accuracy" not in rows[0]  # no --classifier_dir
  # The bytes a row reports are the bytes of the files the codec writes.
  for row in rows:
    codec = baselines.CODECS[row["codec"]]
    files, _ = baselines.code_images(codec, digits, int(row["quality"]))
    for i, data in enumerate(files):
      (tmp_path / f"{i}.bin").write_bytes(data)
    on_disk = np.mean([os.path.getsize(tmp_path / f"{i}.bin")
                       for i in range(len(files))])
    assert float(row["bytes_per_image"]) == pytest.approx(on_disk)


@pytest.mark.slow
def test_qualities_can_be_given_per_codec(tmp_path):
  out = tmp_path / "rates.csv"
  result = _run_tool("--codecs=jpeg,webp", "--qualities=jpeg:5:90,webp:50",
                     "--max_examples=2", f"--out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out) as f:
    assert [(row["codec"], row["quality"]) for row in csv.DictReader(f)] == [
        ("jpeg", "5"), ("jpeg", "90"), ("webp", "50")]


@pytest.mark.slow
def test_bad_qualities_are_one_line(tmp_path):
  result = _run_tool("--codecs=jpeg", "--qualities=av1:63",
                     f"--out={tmp_path / 'x.csv'}")
  assert result.returncode != 0
  assert "'av1' is not one of --codecs" in result.stderr
  assert "Traceback" not in result.stderr


def test_measure_scores_the_images_it_decoded(digits):
  seen = []
  def score(decoded):
    seen.append(decoded)
    return {"accuracy": 0.5}
  codec = baselines.CODECS["jpeg"]
  row = baselines.measure(codec, digits, 5, score=score)
  assert row["accuracy"] == 0.5
  (decoded,) = seen
  assert decoded.shape == digits.shape and decoded.dtype == np.uint8
  assert row["psnr"] == pytest.approx(baselines.psnr(digits, decoded))


def _run_tool(*args):
  return subprocess.run(
      [sys.executable, "tools/baselines.py", *args], cwd=REPO,
      capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.mark.slow
def test_dataset_from_codes_the_images_as_a_model_reads_them(tmp_path):
  """The grouped VAE reads Fashion-MNIST padded to 32x32x3: the codecs it is
  compared with code those very images (here MNIST's, offline)."""
  model = tmp_path / "model"
  model.mkdir()
  dataset = {"name": "mnist", "image_size": 32, "image_fit": "pad",
             "image_channels": 3}
  (model / "config.json").write_text(json.dumps({"dataset": dataset}))
  out = tmp_path / "padded.csv"
  result = _run_tool("--codecs=jpeg", "--qualities=50", "--max_examples=3",
                     f"--dataset_from={model}", f"--out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  with open(out) as f:
    (row,) = list(csv.DictReader(f))
  padded = np.stack([x for x, _ in data.load(**dataset).test.take(3)
                     .as_numpy_iterator()])
  assert padded.shape == (3, 32, 32, 3)
  expected = baselines.measure(baselines.CODECS["jpeg"], padded, 50)
  assert float(row["bytes_per_image"]) == pytest.approx(
      expected["bytes_per_image"])
  assert float(row["psnr"]) == pytest.approx(expected["psnr"])
  both = _run_tool("--codecs=jpeg", f"--dataset_from={model}",
                   f"--classifier_dir={model}", f"--out={out}")
  assert both.returncode == 2 and "not both" in both.stderr


def _finetuned_jpeg_rows(tmp_path, classifier_dir, qualities, examples,
                         finetune_examples):
  """The tool's rows for JPEG at `qualities`, read and fine-tuned."""
  out = tmp_path / "accuracy.csv"
  result = _run_tool(
      "--codecs=jpeg", f"--qualities={qualities}",
      f"--max_examples={examples}", f"--classifier_dir={classifier_dir}",
      "--finetune_epochs=1", f"--finetune_examples={finetune_examples}",
      f"--out={out}")
  assert result.returncode == 0, result.stderr[-2000:]
  assert "uncoded test images" in result.stdout
  with open(out) as f:
    return list(csv.DictReader(f))


@pytest.mark.slow
def test_classifier_accuracy_on_decoded_images(tmp_path, classifier_dir):
  low, high = _finetuned_jpeg_rows(tmp_path, classifier_dir, "5,90", 64, 128)
  assert (low["quality"], high["quality"]) == ("5", "90")
  for row in (low, high):
    assert row["dataset"] == "mnist"  # the classifier's
    for column in ("accuracy", "finetuned_accuracy"):
      value = float(row[column])
      assert 0. <= value <= 1.
      assert value * 64 == pytest.approx(round(value * 64))  # of 64 images
  # The ~80% classifier reads near-clean digits; heavy JPEG costs accuracy.
  assert float(high["accuracy"]) > 0.6
  assert float(high["accuracy"]) >= float(low["accuracy"]) - 0.05


@pytest.mark.slow
def test_a_bfloat16_reader_is_fine_tuned_as_it_trained(tmp_path, mnist):
  """A classifier trained with --precision=mixed_bfloat16 is fine-tuned
  with bfloat16 layers and scored in float32: the tuned copy still reads
  digits as well as the reader does."""
  from tfvaeclf import models, train
  from tests.conftest import run_spec
  reader = tmp_path / "reader"
  train.run_training(run_spec(
      reader, "classifier", models.get("classifier").Config(), epochs=1,
      batch_size=16, learning_rate=3e-3, train_subset=2000,
      precision="mixed_bfloat16"), mnist, verbose=0)
  (row,) = _finetuned_jpeg_rows(tmp_path, reader, "90", 200, 256)
  assert float(row["accuracy"]) > 0.8
  assert float(row["finetuned_accuracy"]) > float(row["accuracy"]) - 0.05


@pytest.mark.slow
def test_classifier_of_another_dataset_is_one_line(tmp_path, classifier_dir):
  result = _run_tool("--dataset=fashion_mnist", "--codecs=jpeg",
                     f"--classifier_dir={classifier_dir}",
                     f"--out={tmp_path / 'x.csv'}")
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and "trained on mnist" in result.stderr
  assert not (tmp_path / "x.csv").exists()
