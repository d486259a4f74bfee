"""The codec spec: one place checks a file, keyed to the encoder side.

A file is read by every model that shares the encoder side that coded it (a
β-VAE's stage 2, a universal rdc decoder), and refused in one line by any
other."""

import dataclasses

import numpy as np
import pytest

from tfvaeclf import codec, data, model_dir, models, train
from tfvaeclf.coding import bitstream
from tfvaeclf.coding.codec_spec import CodecSpec
from tests.conftest import SMALL_RDC, run_cli, run_spec, train_small_rdc

SMALL_BETA_VAE = {"filters": (8, 16, 16), "latent_dim": 8}


def _frozen(kind, config):
  model = models.build(kind, config)
  model.build_from_config()
  model.coder.freeze()
  return model


@pytest.fixture(scope="module")
def beta_vae():
  return _frozen("beta_vae", SMALL_BETA_VAE)


def _perturbed(variable):
  variable.assign(variable + 1.)


@pytest.mark.slow
def test_fingerprint_covers_the_encoder_side_only():
  beta_vae = _frozen("beta_vae", SMALL_BETA_VAE)  # altered below
  spec = CodecSpec.from_model(beta_vae)
  assert CodecSpec.from_model(beta_vae) == spec  # deterministic
  assert spec.latent_shape == (1, 1) and spec.stream_names == ("latent",)
  for part in (beta_vae.classifier, beta_vae.decoder):
    _perturbed(part.weights[0])
  assert CodecSpec.from_model(beta_vae).fingerprint == spec.fingerprint
  fingerprints = {spec.fingerprint}
  # A weight and a batch-norm statistic (not trainable) of the encoder,
  # then the coding tables: each makes other bytes, so another identity.
  moving_mean = next(w for w in beta_vae.encoder.weights
                     if "moving_mean" in w.name)
  for variable in (beta_vae.encoder.weights[0], moving_mean):
    _perturbed(variable)
    fingerprints.add(CodecSpec.from_model(beta_vae).fingerprint)
  tables = beta_vae.coder.tables()
  beta_vae.coder.load_tables({**tables, "cdf_offset": tables["cdf_offset"] - 1})
  fingerprints.add(CodecSpec.from_model(beta_vae).fingerprint)
  assert len(fingerprints) == 4


@pytest.mark.slow
def test_the_dither_seed_is_part_of_the_identity():
  model = _frozen("rdc", SMALL_RDC)
  spec = CodecSpec.from_model(model)
  assert spec.dither_seed == 0
  model.coder.seed = 7
  assert CodecSpec.from_model(model).fingerprint != spec.fingerprint


def _strings(spec, num_images=3):
  return [[bytes([image, stream]) * (image + 1) for image in range(num_images)]
          for stream in range(spec.num_streams)]


@pytest.mark.parametrize("dither_seed", [None, 5])
def test_round_trip_file_size_and_manifest(beta_vae, dither_seed):
  spec = dataclasses.replace(CodecSpec.from_model(beta_vae),
                             dither_seed=dither_seed)
  coded = spec.unpack(spec.pack(_strings(spec)))
  assert coded.strings == _strings(spec)
  assert coded.fingerprint == spec.fingerprint
  assert coded.dither_seed == dither_seed
  one = _strings(spec, num_images=1)
  assert spec.file_size([len(s[0]) for s in one]) == len(spec.pack(one))
  streams = [{"name": name, **({} if dither_seed is None else
                               {"dither": {"seed": dither_seed}})}
             for name in spec.stream_names]
  assert CodecSpec.from_manifest(
      {**spec.manifest_fields(), "streams": streams}) == spec


@pytest.mark.parametrize("changes,message", [
    ({"fingerprint": bytes(8)}, "another model's encoder"),
    ({"image_shape": (32, 32, 3)}, "images"),
    ({"latent_shape": (5, 5)}, "latents of shape"),
    ({"stream_names": ("hyper", "latent")}, "streams per image"),
    ({"dither_seed": 0}, "dither"),
])
def test_a_file_that_does_not_fit_is_refused_in_one_line(beta_vae, changes,
                                                         message):
  writer = CodecSpec.from_model(beta_vae)
  reader = dataclasses.replace(writer, **changes)
  with pytest.raises(bitstream.BitstreamError, match=message) as error:
    reader.unpack(writer.pack(_strings(writer)))
  assert "\n" not in str(error.value)


# -- trained models: one encoder side, several models ----------------------


def _beta_vae(directory, splits, seed=0, pretrained_dir=None, **overrides):
  """8 steps of the small β-VAE on real digits; returns the dir."""
  config = models.get("beta_vae").Config(**{**SMALL_BETA_VAE, **overrides})
  train.run_training(run_spec(
      directory, "beta_vae", config, epochs=1, batch_size=32,
      learning_rate=3e-3, seed=seed, train_subset=256,
      freeze_encoder_from=pretrained_dir), splits, verbose=0)
  return str(directory)


@pytest.fixture(scope="module")
def dirs(mnist, classifier_dir, tmp_path_factory):
  """β-VAE stage 1, its stage 2 (a new head on the frozen VAE) and an
  unrelated β-VAE of the same shape (another seed); an end-to-end rdc
  model and a universal decoder on its frozen encoder."""
  root = tmp_path_factory.mktemp("identity")
  one = _beta_vae(root / "one", mnist)
  end_to_end = train_small_rdc(root / "e2e", mnist, classifier_dir,
                               lambda_cls=.01, seed=0)
  return {
      "one": one,
      "two": _beta_vae(root / "two", mnist, pretrained_dir=one,
                       classifier="selu5"),
      "other": _beta_vae(root / "other", mnist, seed=1),
      "end_to_end": end_to_end,
      "universal": train_small_rdc(root / "universal", mnist, classifier_dir,
                                   lambda_cls=.1, seed=1,
                                   pretrained_dir=end_to_end),
  }


@pytest.fixture(scope="module")
def loaded(dirs):
  return {name: model_dir.load(directory) for name, directory in dirs.items()}


@pytest.fixture(scope="module")
def digits(mnist):
  images, _ = next(iter(mnist.test.batch(16)))
  return images.numpy()


def _reads_the_others_file(writer, reader, images):
  """The writer's file is the reader's own, and decodes in the reader to
  its in-graph latents and classes."""
  file_bytes = codec.compress_images(writer, images)
  assert file_bytes == codec.compress_images(reader, images)
  outputs = reader.model(data.to_float(images), training=False)
  np.testing.assert_array_equal(codec.decode_latent(reader, file_bytes),
                                outputs["latent_hat"])
  np.testing.assert_array_equal(codec.classify_file(reader, file_bytes),
                                np.argmax(outputs["logits"], -1))


@pytest.mark.parametrize("writer,reader", [
    ("one", "two"), ("two", "one"),
    ("end_to_end", "universal"), ("universal", "end_to_end")])
@pytest.mark.slow
def test_models_of_one_encoder_side_read_each_others_files(
    loaded, digits, writer, reader):
  writer, reader = loaded[writer], loaded[reader]
  assert writer.fingerprint != reader.fingerprint  # two models...
  assert writer.codec == reader.codec  # ...one encoder side
  _reads_the_others_file(writer, reader, digits)


@pytest.mark.parametrize("writer,reader", [
    ("one", "other"), ("other", "two"), ("one", "universal"),
    ("end_to_end", "two")])
@pytest.mark.slow
def test_another_encoder_side_refuses_the_file_in_one_line(
    dirs, loaded, digits, tmp_path, capsys, writer, reader):
  path = tmp_path / "foreign.tfvc"
  path.write_bytes(codec.compress_images(loaded[writer], digits))
  code, out, err = run_cli(codec.main, [
      "classify", f"--model_dir={dirs[reader]}", str(path)], capsys)
  assert (code, out) == (2, "")
  assert "another model's encoder" in err and err.count("\n") == 1
