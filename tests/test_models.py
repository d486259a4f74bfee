"""The model contract and the entropy coder, on realistic random latents."""

import ast
import dataclasses
import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import coders, models
from tfvaeclf.models import base


def _images(n=8, shape=(28, 28, 1), seed=0):
  return tf.random.stateless_uniform((n, *shape), seed=(seed, 1))


def test_registry_knows_joint_and_rejects_unknown_names():
  assert "joint" in models.names()
  assert issubclass(models.get("joint"), base.CompressiveClassifier)
  with pytest.raises(ValueError, match="Unknown model 'nope'.*joint"):
    models.get("nope")


def test_registering_a_name_twice_fails():
  with pytest.raises(ValueError, match="twice"):
    models.register("joint")(type("Other", (), {}))


def test_joint_outputs_and_loss_terms():
  model = models.build("joint", {"decoder": True, "gamma": 2.0, "lmbda": 3.0})
  outputs = model(_images(), training=True)
  assert outputs["logits"].shape == (8, 10)
  assert outputs["latent_hat"].shape == (8, 4, 4, 16)
  assert outputs["x_hat"].shape == (8, 28, 28, 1)
  assert outputs["bits"].shape == outputs["mse"].shape == (8,)
  np.testing.assert_allclose(outputs["bpp"], outputs["bits"] / 784.,
                             rtol=1e-6)
  labels = tf.range(8, dtype=tf.int64) % 10
  terms = model.loss_terms(outputs, labels)
  np.testing.assert_allclose(
      terms["loss"], terms["ce"] + 3.0 * terms["bpp"] + 2.0 * terms["mse"],
      rtol=1e-5)


def test_decoder_without_gamma_is_refused():
  with pytest.raises(ValueError, match="gamma"):
    models.build("joint", {"decoder": True, "gamma": 0.0})


def test_config_round_trips_through_a_dict():
  config = models.get("joint").Config(filters=(8, 16), latent_channels=4)
  model = models.build("joint", dataclasses.asdict(config))
  assert model.config.filters == (8, 16)


def test_every_compressive_kind_runs_the_one_forward_pass():
  rewritten = [name for name in models.names()
               if models.get(name).call is not base.CompressiveClassifier.call]
  assert rewritten == ["classifier"]  # it codes nothing; see its `call`


def test_constructors_read_no_files(tmp_path):
  missing = str(tmp_path / "missing")
  for name, config in (
      ("classifier", {"backbone_weights": f"{missing}.h5"}),
      ("rdc", {"backbone_from": missing}),
      ("split", {"backbone_from": missing,
                 "backbone_weights": f"{missing}.h5"})):
    model = models.build(name, config)
    assert getattr(model, model.BACKBONE).weights


def test_models_do_not_import_the_model_dir():
  """The model dir holds models, not the other way round (not even late,
  inside a function)."""
  imported = set()
  for path in glob.glob(os.path.join(os.path.dirname(models.__file__),
                                     "*.py")):
    with open(path) as f:
      for node in ast.walk(ast.parse(f.read())):
        if isinstance(node, ast.ImportFrom):
          imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
          imported.update(a.name for a in node.names)
  assert "tfvaeclf.coders" in imported
  assert not {name for name in imported if "model_dir" in name}


def _spread_joint(**config):
  """A joint model whose latent spans many symbols (and escapes)."""
  model = models.build("joint", config)
  model.build_from_config()
  kernel = model.analysis.layers[-1].kernel
  kernel.assign(kernel * 40.)
  return model


@pytest.fixture(scope="module")
def frozen_joint():
  """Freezing builds the coding tables; slow enough to do once."""
  model = _spread_joint()
  model.coder.freeze()
  return model


def test_classifier_sees_integers_with_straight_through_gradient():
  model = _spread_joint()
  images = _images()
  with tf.GradientTape() as tape:
    outputs = model(images, training=True)
    loss = tf.reduce_sum(outputs["logits"])
  latent_hat = outputs["latent_hat"].numpy()
  assert np.any(latent_hat != 0)
  np.testing.assert_array_equal(latent_hat, np.round(latent_hat))
  grads = tape.gradient(loss, model.analysis.trainable_variables)
  assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_compress_decompress_is_bit_exact_and_classifies_the_same(
    frozen_joint):
  model = frozen_joint
  images = _images(16)
  strings, latent_shape = model.compress(images)
  assert len(strings) == 1 and strings[0].shape == (16,)
  latent_hat = model.decompress(strings, latent_shape)
  in_graph = model(images, training=False)
  np.testing.assert_array_equal(latent_hat.numpy(),
                                in_graph["latent_hat"].numpy())
  np.testing.assert_array_equal(model.classify(latent_hat).numpy(),
                                in_graph["logits"].numpy())


def test_tables_reload_into_a_fresh_coder(frozen_joint):
  model = frozen_joint
  images = _images(4)
  strings, latent_shape = model.compress(images)
  fresh = coders.FactorizedCoder(16)
  fresh.load_tables(model.coder.tables())
  np.testing.assert_array_equal(
      fresh.decompress(strings, latent_shape).numpy(),
      model.decompress(strings, latent_shape).numpy())
  again = fresh.compress(model.encode(images))
  np.testing.assert_array_equal(again[0].numpy(), strings[0].numpy())


def test_coder_refuses_to_code_before_it_is_frozen():
  coder = coders.FactorizedCoder(4)
  with pytest.raises(RuntimeError, match="freeze"):
    coder.compress(tf.zeros((1, 2, 2, 4)))


def test_unknown_entropy_model_is_refused():
  with pytest.raises(ValueError, match="Unknown entropy model"):
    coders.build_coder("bogus", 4)


def test_estimated_rate_tracks_actual_bytes(frozen_joint):
  model = frozen_joint
  images = _images(64)
  strings, _ = model.compress(images)
  actual_bits = np.array([8 * len(s) for s in strings[0].numpy()])
  estimated_bits = model(images, training=False)["bits"].numpy()
  # Range coding costs the information content plus a few bytes; escaped
  # values (many, here) are priced by the prior's tails, hence the 2%.
  assert np.all(actual_bits >= estimated_bits * 0.98 - 8)
  assert np.all(actual_bits <= estimated_bits * 1.02 + 8 * 4)


# The split of natural colour images: a small ResNet on the board, residual
# stages on the server (configs/cifar10_joint_*.flags).
RESIDUAL_JOINT = {"image_shape": (32, 32, 3), "encoder_blocks": 1,
                  "filters": (4, 8), "latent_channels": 8,
                  "classifier_filters": (8, 16), "classifier_units": ()}


def test_residual_encoder_and_classifier_split_the_network():
  model = models.build("joint", RESIDUAL_JOINT)
  images = _images(4, (32, 32, 3))
  with tf.GradientTape() as tape:
    outputs = model(images, training=True)
    ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        tf.range(4) % 10, outputs["logits"]))
  # stem and first stage at 32x32, second at 16x16, the latent at 8x8.
  assert outputs["latent_hat"].shape == (4, 8, 8, 8)
  assert model.latent_shape == (8, 8)
  assert outputs["logits"].shape == (4, 10)
  adds = [layer.name for layer in model.analysis.layers
          if layer.name.endswith("_add")]
  assert adds == ["stage1_add", "stage2_add"]
  assert any(layer.name.endswith("_add") for layer in model.classifier.layers)
  # The board's part and the server's are apart: each its own weights.
  assert not ({id(w) for w in model.analysis.weights}
              & {id(w) for w in model.classifier.weights})
  # The class loss reaches every encoder weight through the rounding.
  grads = tape.gradient(ce, model.analysis.trainable_variables)
  assert all(g is not None and np.any(g.numpy() != 0) for g in grads)


def test_plain_and_residual_encoders_take_the_same_classifier():
  plain = models.build("joint", {**RESIDUAL_JOINT, "encoder_blocks": 0,
                                 "filters": (8,), "kernel_size": 3})
  outputs = plain(_images(2, (32, 32, 3)), training=False)
  assert outputs["latent_hat"].shape == (2, 8, 8, 8)
  assert outputs["logits"].shape == (2, 10)


@pytest.mark.parametrize("overrides, message", [
    ({"decoder": True, "gamma": 1.0}, "cannot reconstruct from "
                                      "--encoder_blocks"),
    ({"latent": "global"}, "--classifier_filters convolve a spatial latent"),
])
def test_residual_options_refuse_what_they_cannot_build(overrides, message):
  with pytest.raises(ValueError, match=message):
    models.build("joint", {**RESIDUAL_JOINT, **overrides})
