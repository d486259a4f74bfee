"""The VAE kinds: β-VAE and grouped VAE, their loss, coding and second stage."""

import dataclasses
import glob
import os

from absl import flags
from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import data, losses, model_dir, models, specs, train
from tfvaeclf.models import beta_vae
from tests.conftest import run_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small enough to train a few steps in seconds on 2 cores.
SMALL_BETA_VAE = {"filters": (8, 16, 16), "latent_dim": 8}


def _images(shape=(28, 28, 1), n=4, seed=0):
  return tf.random.stateless_uniform((n, *shape), seed=(seed, 7))


def _built(name="beta_vae", **config):
  model = models.build(name, {**SMALL_BETA_VAE, **config}
                       if name == "beta_vae" else config)
  model.build_from_config()
  return model


def test_vae_kinds_are_registered():
  assert {"beta_vae", "grouped_vae", "joint"} <= set(models.names())


def test_seed_encoder_shapes():
  """32, 64, 64 maps, 4x4 kernels, strides 2, 2, 1: 28 -> 14 -> 7 -> 6."""
  config = beta_vae.BetaVAEConfig()
  plan = beta_vae._layer_plan(config)
  assert [p[0] for p in plan] == [32, 64, 64]
  assert beta_vae._feature_sizes(plan, (28, 28, 1)) == [
      (28, 28), (14, 14), (7, 7), (6, 6)]
  quickdraw = beta_vae._layer_plan(
      beta_vae.BetaVAEConfig(extra_conv=True, latent_dim=30))
  assert quickdraw[-1] == (64, 3, 1)


@pytest.mark.parametrize("kernel_size", [3, 4, 5])
@pytest.mark.parametrize("layers", [2, 5])
def test_decoder_restores_the_image_size_across_the_search_grid(
    kernel_size, layers):
  model = _built(kernel_size=kernel_size, filters=(8,) * layers)
  outputs = model(_images(), training=False)
  assert outputs["x_hat"].shape == (4, 28, 28, 1)
  assert outputs["latent_hat"].shape == (4, 1, 1, 8)


def test_beta_weights_the_kl_and_beta_zero_is_an_autoencoder_loss():
  labels = tf.constant([0, 1, 2, 3])
  terms = {}
  for beta in (0., 2.):
    tf.keras.utils.set_random_seed(1)
    model = _built(beta=beta)
    tf.keras.utils.set_random_seed(2)  # the same sample for both
    terms[beta] = model.loss_terms(model(_images(), training=True), labels)
  zero = terms[0.]
  assert float(zero["kl"]) > 0.
  np.testing.assert_allclose(
      float(zero["loss"]),
      float(zero["recon"] + zero["ce"] + zero["bpp"] * 28 * 28), rtol=1e-5)
  np.testing.assert_allclose(
      float(terms[2.]["loss"] - zero["loss"]), 2. * float(zero["kl"]),
      rtol=1e-4)


def test_kl_is_that_of_the_encoders_posterior():
  model = _built()
  images = _images()
  np.testing.assert_allclose(
      model(images)["kl"], losses.gaussian_kl(*model.encoder(images)),
      rtol=1e-6)


def _gradients(model, term):
  images, labels = _images(), tf.constant([0, 1, 2, 3])
  with tf.GradientTape() as tape:
    value = model.loss_terms(model(images, training=True), labels)[term]
  parts = {"encoder": model.encoder.trainable_variables,
           "coder": model.coder.trainable_variables,
           "classifier": model.classifier.trainable_variables}
  grads = tape.gradient(value, parts)
  return {name: sum(float(tf.reduce_sum(tf.abs(g))) for g in grad
                    if g is not None) for name, grad in grads.items()}


def test_classifier_loss_never_reaches_the_vae():
  grads = _gradients(_built(), "ce")
  assert grads["classifier"] > 0.
  assert grads["encoder"] == 0.


def test_encoder_ce_weight_scales_the_classifier_gradient_on_the_encoder():
  """Same weights, same forward pass; the encoder's CE gradient is linear
  in the weight."""
  tf.random.set_seed(3)
  model = _built(encoder_ce_weight=1.)
  full = _gradients(model, "ce")
  model.config = dataclasses.replace(model.config, encoder_ce_weight=.25)
  quarter = _gradients(model, "ce")
  assert full["encoder"] > 0.
  np.testing.assert_allclose(quarter["encoder"], .25 * full["encoder"],
                             rtol=1e-4)
  np.testing.assert_allclose(quarter["classifier"], full["classifier"],
                             rtol=1e-5)


@pytest.mark.parametrize("lmbda", [0., 0.5])
def test_rate_trains_the_prior_and_reaches_the_encoder_only_with_lmbda(lmbda):
  grads = _gradients(_built(lmbda=lmbda), "bpp")
  assert grads["coder"] > 0.
  assert (grads["encoder"] > 0.) == (lmbda > 0.)


def test_classifier_reads_the_decoded_mean_in_quantization_steps():
  model = _built(quantization_step=0.25)
  mean, _ = model.encoder(_images(), training=True)  # batch statistics
  outputs = model(_images(), training=True)
  np.testing.assert_array_equal(outputs["latent_hat"],
                                tf.round(mean / 0.25))


@pytest.mark.parametrize("entropy_model", ["factorized", "hyperprior",
                                           "context"])
def test_coded_mean_round_trips_bit_exactly(entropy_model):
  model = _built(entropy_model=entropy_model)
  model.coder.freeze()
  images = _images(n=6)
  strings, shape = model.compress(images)
  decoded = model.decompress(strings, shape)
  np.testing.assert_array_equal(
      decoded, model(images, training=False)["latent_hat"])
  np.testing.assert_array_equal(
      model.classify(decoded), model(images, training=False)["logits"])


def test_bad_settings_are_refused():
  with pytest.raises(ValueError, match="classifier"):
    models.build("beta_vae", {"classifier": "deep"})
  with pytest.raises(ValueError, match="quantization_step"):
    models.build("beta_vae", {"quantization_step": 0.})
  with pytest.raises(ValueError, match="encoder_ce_weight"):
    models.build("beta_vae", {"encoder_ce_weight": -1.})
  with pytest.raises(ValueError, match="too small"):
    models.build("beta_vae", {"filters": (8,) * 4, "kernel_size": 4,
                              "image_shape": (4, 4, 1)})
  with pytest.raises(ValueError, match="--image_size=32"):
    models.build("grouped_vae", {"image_shape": (28, 28, 1)})


@pytest.mark.parametrize("version,channels", [("v1", 3), ("v2", 1)])
@pytest.mark.slow
def test_grouped_vae_codes_and_reconstructs(version, channels):
  model = _built("grouped_vae", version=version,
                 image_shape=(32, 32, channels))
  model.coder.freeze()
  images = _images((32, 32, channels))
  strings, shape = model.compress(images)
  x_hat = model.reconstruct(model.decompress(strings, shape))
  assert x_hat.shape == images.shape
  np.testing.assert_allclose(x_hat, model(images)["x_hat"], atol=1e-6)


# -- training on real data, and the second stage on a frozen encoder -------


def _train(directory, splits, pretrained_dir=None, **config):
  config = models.get("beta_vae").Config(**{**SMALL_BETA_VAE, **config})
  return train.run_training(run_spec(
      directory, "beta_vae", config, epochs=1, batch_size=32,
      learning_rate=3e-3, seed=0, train_subset=256,
      freeze_encoder_from=pretrained_dir), splits, verbose=0)


@pytest.fixture(scope="module")
def stage_one(mnist, tmp_path_factory):
  """A finished beta_vae model dir (one epoch on 256 real digits)."""
  directory = tmp_path_factory.mktemp("beta_vae")
  _train(directory, mnist)
  return str(directory)


def _weights(module):
  return [w.numpy() for w in module.weights]


@pytest.mark.slow
def test_second_stage_keeps_the_vae_bit_identical(stage_one, mnist, tmp_path):
  source = model_dir.load(stage_one).model
  _train(tmp_path, mnist, pretrained_dir=stage_one, classifier="selu5")
  stage_two = model_dir.load(str(tmp_path)).model
  for part in ("encoder", "decoder", "coder"):
    before, after = _weights(getattr(source, part)), _weights(
        getattr(stage_two, part))
    assert len(before) == len(after) > 0
    for b, a in zip(before, after):  # batch norm statistics included
      np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(stage_two.coder.tables()["cdf"],
                                source.coder.tables()["cdf"])
  images = data.to_float(next(iter(mnist.test.batch(8)))[0])
  np.testing.assert_array_equal(stage_two.compress(images)[0][0],
                                source.compress(images)[0][0])
  config = model_dir.read_config(str(tmp_path))
  assert config["training"]["pretrained"]["fingerprint"] == (
      model_dir.load(stage_one).fingerprint.hex())


@pytest.mark.slow
def test_second_stage_refuses_an_encoder_that_does_not_fit(
    stage_one, mnist, tmp_path):
  with pytest.raises(model_dir.ModelDirError, match="does not fit"):
    _train(tmp_path / "wider", mnist, pretrained_dir=stage_one,
           filters=(8, 16, 32))
  with pytest.raises(model_dir.ModelDirError, match="beta_vae"):
    train.run_training(run_spec(
        tmp_path / "joint", "joint", models.get("joint").Config(), epochs=1,
        batch_size=32, learning_rate=1e-3, seed=0, train_subset=64,
        freeze_encoder_from=stage_one), mnist, verbose=0)


@pytest.mark.slow
def test_stage_one_dir_evaluates_with_real_bytes_and_psnr(stage_one, mnist):
  from tfvaeclf import evaluate
  results = evaluate.evaluate(model_dir.load(stage_one), mnist.test.take(64),
                              batch_size=32, progress=False)
  assert results["agreement_with_in_graph"] == 1.
  assert results["bytes_per_image"] > 0
  assert results["file_bytes_per_image"] > results["bytes_per_image"]
  assert 5. < results["psnr"] < 40.
  assert os.path.exists(os.path.join(stage_one, "coder_tables.npz"))


VAE_CONFIGS = sorted(  # search configs (*_search.flags) are test_search's
    p for p in glob.glob(os.path.join(REPO, "configs", "*.flags"))
    if ("_beta_vae" in p or "_grouped_vae" in p)
    and not p.endswith("_search.flags"))


@pytest.mark.parametrize("path", VAE_CONFIGS, ids=os.path.basename)
@pytest.mark.slow
def test_every_vae_config_trains_a_few_steps(path, mnist):
  """Each config's model on real digits of its image shape (QuickDraw and
  CIFAR-10 are not on this machine: MNIST stands in, padded and tiled)."""
  with flagsaver.flagsaver():
    FLAGS = flags.FLAGS
    FLAGS(["train", f"--flagfile={path}"])
    size = FLAGS.image_size or (32 if FLAGS.dataset == "cifar10" else 28)
    channels = 3 if FLAGS.dataset == "cifar10" else 1
    info = dataclasses.replace(mnist.info,
                               image_shape=(size, size, channels))
    run = specs.from_flags(FLAGS)
    config, model_name = run.with_data(info).model, run.model_name
  images, labels = next(iter(mnist.train.batch(8)))
  images = tf.image.resize_with_crop_or_pad(data.to_float(images), size, size)
  images = tf.tile(images, (1, 1, 1, channels))
  model = models.build(model_name, config)
  model.build_from_config()
  model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
  before = [w.numpy() for w in model.encoder.trainable_weights]
  history = model.fit(
      tf.data.Dataset.from_tensors((images, labels)).repeat(2), verbose=0)
  assert np.isfinite(history.history["loss"]).all()
  assert all(not np.array_equal(b, a.numpy())
             for b, a in zip(before, model.encoder.trainable_weights))


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_ce_config_is_the_seed_config_with_the_encoder_gradient(dataset,
                                                                mnist):
  def config_of(name):
    with flagsaver.flagsaver():
      flags.FLAGS(["train", f"--flagfile=configs/{name}.flags"])
      return specs.from_flags(flags.FLAGS).with_data(mnist.info).model
  seed = config_of(f"{dataset}_beta_vae")
  joint = config_of(f"{dataset}_beta_vae_ce")
  assert seed.encoder_ce_weight == 0. and joint.encoder_ce_weight == 30.
  assert dataclasses.replace(joint, encoder_ce_weight=0.) == seed
