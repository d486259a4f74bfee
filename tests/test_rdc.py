"""Universal rate-distortion-classification models: the shared
dither, the fixed-rate quantizer, frozen parts, files and the sweep."""

import csv
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import codec, coders, data, model_dir, models
from tfvaeclf.coding import bitstream, dither
from tfvaeclf.experiments import rdc_sweep
from tests.conftest import SMALL_RDC, run_cli, train_small_rdc


# -- the dither ---------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 12345, dither.MAX_SEED])
def test_both_ends_draw_the_same_dither(seed):
  shape = (1, 1, 7)
  board = dither.np_dither(seed, 50, shape)
  server = dither.tf_dither(tf.constant(seed, tf.int64), 50, shape).numpy()
  assert board.dtype == server.dtype == np.float32
  np.testing.assert_array_equal(board, server)


def test_dither_is_uniform_and_differs_by_seed_image_and_element():
  u = dither.np_dither(3, 2000, (16,))
  assert u.min() >= -.5 and u.max() < .5
  assert abs(u.mean()) < .01 and abs(u.std() - 1 / math.sqrt(12)) < .005
  # Neighbouring images and elements are not correlated.
  assert abs(np.corrcoef(u[:-1].ravel(), u[1:].ravel())[0, 1]) < .05
  assert abs(np.corrcoef(u[:, :-1].ravel(), u[:, 1:].ravel())[0, 1]) < .05
  other = dither.np_dither(4, 2000, (16,))
  assert np.mean(u == other) < .01


def test_the_dither_of_seed_0_is_pinned():
  """The hash is part of the file format: changing it breaks every file."""
  np.testing.assert_array_equal(
      dither.np_dither(0, 1, (3,)).ravel(),
      np.array([-0.07534742, -0.4725544, -0.29097188], np.float32))


# -- the quantizer ------------------------------------------------------------

def test_fixed_rate_is_dim_times_log2_levels():
  assert coders.DitheredCoder((1, 1, 8), 4).fixed_bits == 16.
  assert coders.DitheredCoder((1, 1, 5), 3).fixed_bits == pytest.approx(
      5 * math.log2(3))
  assert coders.DitheredCoder((2, 2, 3), 16).fixed_bits == 48.


@pytest.mark.parametrize("training", [True, False])
def test_quantization_error_is_within_half_a_step(training):
  coder = coders.DitheredCoder((1, 1, 32), 5, seed=9)
  latent = tf.random.stateless_uniform((64, 1, 1, 32), (1, 2), 0., 4.)
  latent_hat, bits = coder(latent, training=training)
  error = (latent_hat - latent).numpy()
  assert error.min() >= -.5 and error.max() < .5
  assert bits.shape == (64,)
  if not training:  # the dither of seed 9, image i, element e
    u = dither.np_dither(9, 64, (1, 1, 32))
    symbols = latent_hat.numpy() + u
    np.testing.assert_allclose(symbols, np.round(symbols), atol=1e-5)
    assert symbols.min() > -1e-5 and symbols.max() < 4 + 1e-5


def test_coded_symbols_decode_to_the_test_path_bit_for_bit():
  coder = coders.DitheredCoder((1, 1, 12), 4, seed=5)
  latent = tf.random.stateless_uniform((40, 1, 1, 12), (3, 4), 0., 3.)
  coder(latent, training=True)  # creates the prior
  coder.freeze()
  strings = coder.compress(latent)
  expected, _ = coder(latent, training=False)
  np.testing.assert_array_equal(
      coder.decompress(strings, (1, 1)).numpy(), expected.numpy())
  other_seed = coder.decompress(coder.compress(latent, seed=6), (1, 1),
                                seed=6)
  assert not np.array_equal(other_seed.numpy(), expected.numpy())
  np.testing.assert_allclose(other_seed.numpy(), latent.numpy(), atol=.5)


def test_bad_settings_are_one_line_errors():
  with pytest.raises(ValueError, match="levels"):
    coders.DitheredCoder((1, 1, 4), 1)
  with pytest.raises(ValueError, match="dither_seed"):
    coders.DitheredCoder((1, 1, 4), 4, seed=-1)
  with pytest.raises(ValueError, match="factorized"):
    models.build("rdc", {**SMALL_RDC, "entropy_model": "hyperprior"})
  with pytest.raises(ValueError, match="lambda_cls"):
    models.build("rdc", {**SMALL_RDC, "lambda_cls": -1.})


def test_a_file_carries_its_dither_seed():
  coded = bitstream.CodedImages(b"\x01" * 8, (28, 28, 1), (1, 1),
                                [[b"abc", b"de"]], dither_seed=2**32 - 1)
  packed = bitstream.pack(coded)
  assert packed[4] == bitstream.FORMAT_VERSION
  assert bitstream.unpack(packed) == coded
  one = bitstream.CodedImages(b"\x01" * 8, (28, 28, 1), (1, 1), [[b"abc"]],
                              dither_seed=7)
  assert len(bitstream.pack(one)) == bitstream.file_size(2, [3],
                                                         dithered=True)
  plain = bitstream.pack(bitstream.CodedImages(
      b"\x01" * 8, (28, 28, 1), (1, 1), [[b"abc"]]))
  assert plain[4] == 1 and len(plain) == len(bitstream.pack(one)) - 4


# -- trained models -----------------------------------------------------------

@pytest.fixture(scope="module")
def end_to_end(mnist, classifier_dir, tmp_path_factory):
  return train_small_rdc(tmp_path_factory.mktemp("rdc") / "e2e", mnist,
                         classifier_dir, lambda_cls=.01, seed=0)


@pytest.fixture(scope="module")
def universal(mnist, classifier_dir, end_to_end, tmp_path_factory):
  """A new decoder for another lambda on the frozen end-to-end encoder."""
  return train_small_rdc(tmp_path_factory.mktemp("rdc") / "universal",
                         mnist, classifier_dir, lambda_cls=.1, seed=1,
                         pretrained_dir=end_to_end)


def _weights(layer):
  return [w.numpy() for w in layer.weights]


def _same(a, b):
  return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.slow
def test_classifier_is_never_updated(end_to_end, universal, classifier_dir):
  judge = _weights(model_dir.load_classifier(classifier_dir).model.backbone)
  for directory in (end_to_end, universal):
    model = model_dir.load(directory).model
    assert _same(_weights(model.judge), judge)  # batch norm statistics too
    assert not model.judge.trainable_weights


@pytest.mark.slow
def test_a_finished_dir_loads_without_the_classifier_dir(end_to_end,
                                                         monkeypatch):
  def unreadable(directory):
    raise AssertionError(f"read {directory}")
  monkeypatch.setattr(model_dir, "load_classifier", unreadable)
  loaded = model_dir.load(end_to_end)
  assert loaded.model.config.backbone_from  # recorded, not read
  assert not loaded.model.judge.trainable_weights


@pytest.mark.slow
def test_universal_model_keeps_the_encoder_bit_for_bit(end_to_end, universal,
                                                        mnist):
  source, reused = model_dir.load(end_to_end), model_dir.load(universal)
  assert _same(_weights(source.model.encoder), _weights(reused.model.encoder))
  assert _same(_weights(source.model.coder), _weights(reused.model.coder))
  assert not _same(_weights(source.model.decoder),
                   _weights(reused.model.decoder))
  images = np.stack([x for x, _ in mnist.test.take(20).as_numpy_iterator()])
  # One encoder: both models write the same symbols.
  assert (bitstream.unpack(codec.compress_images(source, images)).strings ==
          bitstream.unpack(codec.compress_images(reused, images)).strings)


@pytest.mark.slow
def test_file_decodes_to_the_in_graph_reconstruction(universal, mnist):
  loaded = model_dir.load(universal)
  images = np.stack([x for x, _ in mnist.test.take(25).as_numpy_iterator()])
  file_bytes = codec.compress_images(loaded, images)
  assert bitstream.unpack(file_bytes).dither_seed == 0
  reference = loaded.model(data.to_float(images), training=False)
  latent_hat = codec.decode_latent(loaded, file_bytes)
  np.testing.assert_array_equal(latent_hat.numpy(),
                                reference["latent_hat"].numpy())
  np.testing.assert_array_equal(loaded.model.reconstruct(latent_hat).numpy(),
                                reference["x_hat"].numpy())
  np.testing.assert_array_equal(
      codec.classify_file(loaded, file_bytes),
      np.argmax(reference["logits"].numpy(), -1))


@pytest.mark.slow
def test_the_receiver_uses_the_seed_in_the_file(universal, mnist):
  loaded = model_dir.load(universal)
  images = np.stack([x for x, _ in mnist.test.take(10).as_numpy_iterator()])
  coded = bitstream.unpack(codec.compress_images(loaded, images))
  reseeded = bitstream.pack(
      bitstream.CodedImages(coded.fingerprint, coded.image_shape,
                            coded.latent_shape, coded.strings, 99))
  shifted = codec.decode_latent(loaded, reseeded).numpy()
  right = codec.decode_latent(loaded, bitstream.pack(coded)).numpy()
  np.testing.assert_allclose(shifted - right,
                             dither.np_dither(0, 10, (1, 1, 6)) -
                             dither.np_dither(99, 10, (1, 1, 6)), atol=1e-6)
  undithered = bitstream.pack(
      bitstream.CodedImages(coded.fingerprint, coded.image_shape,
                            coded.latent_shape, coded.strings))
  with pytest.raises(bitstream.BitstreamError, match="dither"):
    codec.decode_latent(loaded, undithered)


def test_a_classifier_of_another_shape_is_refused(mnist, classifier_dir):
  with pytest.raises(ValueError, match="filters"):
    model_dir.restore_backbone(models.build("rdc", {
        **SMALL_RDC, "backbone_from": classifier_dir,
        "backbone_widths": (8, 16, 32)}))


def test_a_missing_classifier_dir_says_how_to_train_it(tmp_path):
  missing = str(tmp_path / "mnist_classifier")
  with pytest.raises(model_dir.ModelDirError) as error:
    model_dir.restore_backbone(models.build("rdc", {
        **SMALL_RDC, "backbone_from": missing}))
  message = str(error.value)
  assert "\n" not in message
  assert "--flagfile=configs/DATASET_resnet.flags" in message
  assert f"--model_dir={missing}" in message


# -- the sweep ----------------------------------------------------------------

@pytest.mark.slow
def test_sweep_with_two_encoders_writes_its_gaps(tmp_path, capsys,
                                                 classifier_dir):
  out = tmp_path / "sweep"
  argv = ["--model=rdc", "--dataset=mnist", "--validation_size=500",
          f"--backbone_from={classifier_dir}", "--filters=8,16",
          "--train_subset=300", "--epochs=1", "--batch_size=32",
          "--max_examples=64", "--lambdas=0,0.05", "--rates=4:2",
          "--encoder_lambdas=0,0.05", f"--out={out}"]
  code, stdout, stderr = run_cli(rdc_sweep.main, argv, capsys)
  assert code in (0, None), stderr
  with open(out / "points.csv") as f:
    rows = list(csv.DictReader(f))
  assert [(r["kind"], float(r["encoder_lambda"]), float(r["lambda_cls"]))
          for r in rows] == [
      ("end_to_end", 0., 0.), ("universal", 0., 0.),
      ("end_to_end", .05, .05), ("universal", .05, .05),
      ("universal", 0., .05), ("universal", .05, 0.)]
  assert all(float(r["fixed_bits_per_image"]) == 4. for r in rows)
  e2e = {float(r["lambda_cls"]): r for r in rows if r["kind"] == "end_to_end"}
  for row in rows[4:]:
    encoder, lmbda = float(row["encoder_lambda"]), float(row["lambda_cls"])
    assert row["dir"].endswith(f"universal_e{encoder:g}_l{lmbda:g}")
    assert float(row["psnr_gap_db"]) == pytest.approx(
        float(row["psnr"]) - float(e2e[lmbda]["psnr"]))
    assert float(row["accuracy_gap"]) == pytest.approx(
        100 * (float(row["accuracy"]) - float(e2e[lmbda]["accuracy"])))
    # The shared encoder is the frozen end-to-end one: same latents.
    with open(os.path.join(row["dir"], "config.json")) as f:
      frozen = json.load(f)["training"]["pretrained"]["dir"]
    assert os.path.samefile(frozen, e2e[encoder]["dir"])
  table = (out / "gaps.md").read_text()
  assert table in stdout
  assert len(table.strip().splitlines()) == 2 + 2  # header and 2 universal
  for row in rows[4:]:
    verdict = "yes" if rdc_sweep.within_claim(
        {k: float(row[k]) for k in ("accuracy_gap", "psnr_gap_db")}) else (
            "no")
    assert (f"| {float(row['encoder_lambda']):g} | "
            f"{float(row['lambda_cls']):g} |") in table
    assert f"{float(row['accuracy_gap']):+.2f} / " in table
    assert table.count(f"| {verdict} |") >= 1
  for figure in ("rdc_mnist.png", "gaps_mnist.png"):
    assert os.path.getsize(out / figure) > 10_000
  # A rerun trains nothing and writes the same table.
  before = (out / "points.csv").read_text()
  eval_json = out / "d4_L2" / "universal_e0_l0.05" / "eval.json"
  stamp = os.path.getmtime(eval_json)
  code, _, stderr = run_cli(rdc_sweep.main, argv, capsys)
  assert code in (0, None), stderr
  assert (out / "points.csv").read_text() == before
  assert os.path.getmtime(eval_json) == stamp


def test_the_claim_is_one_point_and_one_db():
  assert rdc_sweep.within_claim({"accuracy_gap": -1., "psnr_gap_db": 3.})
  assert not rdc_sweep.within_claim({"accuracy_gap": -1.01,
                                     "psnr_gap_db": 0.})
  assert not rdc_sweep.within_claim({"accuracy_gap": 2., "psnr_gap_db": -1.2})


@pytest.mark.parametrize("flag, message", [
    ("--rates=8", "DIM:L"), ("--rates=8:1", "DIM:L"),
    ("--lambdas=0,x", "not numbers"), ("--encoder_lambdas=3", "not one of"),
    ("--encoder_lambdas=x", "not numbers"),
])
def test_sweep_flags_are_checked_in_one_line(tmp_path, capsys, flag, message):
  code, _, stderr = run_cli(rdc_sweep.main, [
      "--model=rdc", f"--out={tmp_path}", flag], capsys)
  assert code == 2 and message in stderr and len(stderr.splitlines()) == 1
