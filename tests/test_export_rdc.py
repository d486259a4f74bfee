"""Exporting a universal (dithered) rdc model: the board codes real digits
with the shared dither, and the server side decodes them with the seed of
the file to what the Keras model computes."""

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from tfvaeclf import codec, data, model_dir
from tfvaeclf.coding import bitstream, bundle, dither
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.serve.bundle_server import BundleServer

from tfvaeclf import export
from tests.conftest import SMALL_RDC, edge_process, train_small_rdc
from tests.test_export import classify_without_tfc

NUM_IMAGES = 50


@pytest.fixture(scope="module")
def rdc(mnist, classifier_dir, tmp_path_factory):
  """A small rdc model (1 epoch, 600 digits), loaded from its dir."""
  directory = train_small_rdc(tmp_path_factory.mktemp("rdc") / "e2e", mnist,
                              classifier_dir, lambda_cls=.01, seed=0)
  return model_dir.load(directory)


@pytest.fixture(scope="module")
def rdc_bundle(rdc, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("rdc_export") / "bundle")
  export.export_bundle(rdc, out, export.calibration_images(rdc.config, 100))
  return out


@pytest.fixture(scope="module")
def digits(mnist, rdc):
  """Test digits (uint8) and the Keras model's outputs on them."""
  images, _ = next(iter(mnist.test.batch(NUM_IMAGES)))
  return images.numpy(), rdc.model(data.to_float(images), training=False)


@pytest.fixture(scope="module")
def edge_file(rdc_bundle, digits):
  """The board's file of the digits (float encoder)."""
  return EdgeEncoder(rdc_bundle).encode_file(digits[0])


@pytest.fixture(scope="module")
def decoded(rdc, digits, edge_file):
  """The file's latents as the codec decodes them, and per image whether
  they equal the Keras model's bit for bit."""
  latent_hat = codec.decode_latent(rdc, edge_file).numpy()
  expected = digits[1]["latent_hat"].numpy()
  return latent_hat, np.all(latent_hat == expected, axis=(1, 2, 3))


def test_manifest_carries_the_dither(rdc, rdc_bundle):
  with open(os.path.join(rdc_bundle, bundle.MANIFEST)) as f:
    manifest = json.load(f)
  coder = rdc.model.coder
  assert manifest["format_version"] == 2
  assert manifest["streams"] == [{
      "name": "latent", "tables": "channel", "dtype": "int32",
      "shape": [1, 1, SMALL_RDC["latent_dim"]],
      "dither": {"seed": coder.seed, "levels": SMALL_RDC["levels"]}}]
  with np.load(os.path.join(rdc_bundle, bundle.TABLES)) as npz:
    for name, table in coder.symbol_coder.tables().items():
      np.testing.assert_array_equal(npz[f"latent/{name}"], table)
  # The server takes the latents less their dither: no seed.
  for name, signature in manifest["server"]["signatures"].items():
    assert signature["inputs"] == {"latent_hat": {
        "dtype": "float32", "shape": [None, 1, 1, SMALL_RDC["latent_dim"]]}}
  # The board's encoder stops at y, unrounded: floats in [0, L - 1].
  outputs = manifest["edge"]["encoders"][bundle.ENCODER]["outputs"]
  assert outputs["latent"]["dtype"] == "float32"


@pytest.mark.slow
def test_edge_cli_without_tensorflow_writes_the_seed(rdc_bundle, digits,
                                                     tmp_path):
  """The dither is numpy only: the board still never imports TensorFlow."""
  png, output = str(tmp_path / "digit.png"), tmp_path / "digit.tfvc"
  Image.fromarray(digits[0][0, ..., 0]).save(png)
  result = edge_process("encode", f"--bundle={rdc_bundle}",
                         f"--output={output}", png)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "loaded: ['ai_edge_litert']"
  file_bytes = output.read_bytes()
  assert bitstream.unpack(file_bytes).dither_seed == 0
  assert file_bytes == EdgeEncoder(rdc_bundle).encode_file(digits[0][:1])


@pytest.mark.slow
def test_edge_file_decodes_to_the_in_graph_latents(rdc, digits, edge_file,
                                                   decoded):
  coded = rdc.codec.unpack(edge_file)
  assert coded.dither_seed == rdc.model.coder.seed
  latent_hat, same = decoded
  expected = digits[1]["latent_hat"].numpy()
  # Float TFLite may round y differently from TF, flipping a symbol where
  # y + u falls on a boundary: measured 0 of 50 images.
  print(f"float TFLite's symbols differ from TF's in {np.sum(~same)} of "
        f"{NUM_IMAGES} images")
  assert np.mean(same) >= .98
  # Elsewhere only symbols rounded the other way: whole steps apart.
  steps = (latent_hat - expected)[~same]
  np.testing.assert_allclose(steps, np.round(steps), atol=1e-6)


@pytest.mark.slow
def test_int8_encoder_adds_the_dither_after_dequantizing(rdc, rdc_bundle,
                                                         digits):
  images, outputs = digits
  symbols = EdgeEncoder(rdc_bundle, int8=True).latents(images)["latent"]
  u = dither.np_dither(rdc.model.coder.seed, NUM_IMAGES, symbols.shape[1:])
  # m - u is within a half step of TF's y, plus the int8 output's error.
  y = rdc.model.encode(data.to_float(images)).numpy()
  assert np.abs(symbols - u - y).max() < .5 + .02
  in_graph = np.rint(outputs["latent_hat"].numpy() + u)
  agree = np.mean(symbols == in_graph)
  print(f"int8 symbols equal TF's for {100 * agree:.1f}% of the entries")
  assert agree >= .95


def test_server_decodes_with_the_seed_of_the_file(rdc, rdc_bundle, digits,
                                                  edge_file, decoded):
  served = BundleServer(rdc_bundle, rdc.fingerprint)
  latent_hat = served.decode(edge_file)
  np.testing.assert_array_equal(latent_hat, decoded[0])
  same = decoded[1]  # the images whose symbols TFLite and TF agree on
  outputs = digits[1]
  classes = served.classify(latent_hat)["classes"]
  np.testing.assert_array_equal(
      classes[same], tf.argmax(outputs["logits"], -1).numpy()[same])
  images = served.reconstruct(latent_hat)
  np.testing.assert_array_equal(
      images[same],
      np.round(outputs["x_hat"].numpy()[same] * 255).astype(np.uint8))
  # The same symbols under another seed: another dither is subtracted.
  coded = rdc.codec.unpack(edge_file)
  reseeded = served.decode(
      dataclasses.replace(rdc.codec, dither_seed=7).pack(coded.strings))
  shape = latent_hat.shape[1:]
  np.testing.assert_allclose(
      reseeded + dither.np_dither(7, NUM_IMAGES, shape),
      latent_hat + dither.np_dither(coded.dither_seed, NUM_IMAGES, shape),
      atol=1e-6)
  assert not np.array_equal(served.reconstruct(reseeded), images)


@pytest.mark.slow
def test_server_decodes_board_messages_with_their_counters(rdc, rdc_bundle,
                                                          digits):
  """Message c carries dither index c: the server subtracts that dither,
  as the codec does, and consecutive messages differ in their dither."""
  messages = EdgeEncoder(rdc_bundle).encode_messages(digits[0][:4],
                                                     first_counter=1000)
  served = BundleServer(rdc_bundle)
  for message in messages:
    np.testing.assert_array_equal(served.decode(message),
                                  codec.decode_latent(rdc, message).numpy())
  coded = [rdc.codec.read(message) for message in messages]
  assert [c.dither_index for c in coded] == [1000, 1001, 1002, 1003]


@pytest.mark.slow
def test_server_side_runs_without_tfc(rdc, rdc_bundle, digits, edge_file,
                                      decoded, tmp_path):
  """Board-made and codec-made files classify as Keras does, in a process
  that cannot import tensorflow_compression."""
  images, outputs = digits
  keras = tf.argmax(outputs["logits"], -1).numpy()
  board, codec_made = classify_without_tfc(
      rdc_bundle, [edge_file, codec.compress_images(rdc, images)],
      str(tmp_path))
  same = decoded[1]
  np.testing.assert_array_equal(board[same], keras[same])
  np.testing.assert_array_equal(codec_made, keras)
