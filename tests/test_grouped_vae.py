"""The grouped VAE: every shape and parameter count of Tables 1-4."""

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf.models.grouped_vae import grouped_vae

# Per version: the tables' rows as (output H x W x C, params). The encoder's
# last row is each of the two heads; the decoder's rows are in table order.
TABLES = {
    "v1": {
        "encoder": [((16, 16, 12), 588), ((8, 8, 48), 2352),
                    ((4, 4, 192), 9408)],
        "head": ((2, 2, 768), 37632),
        "decoder": [((4, 4, 192), 37056), ((8, 8, 48), 9264),
                    ((16, 16, 12), 2316), ((32, 32, 3), 579)],
        "totals": (87612, 49215, 136827),
    },
    "v2": {
        "encoder": [((16, 16, 12), 1308), ((9, 9, 40), 1960)],
        "head": ((5, 5, 128), 5888),
        "decoder": [((9, 9, 40), 5800), ((16, 16, 12), 1932),
                    ((32, 32, 3), 1299)],
        "totals": (15044, 9031, 24075),
    },
}
VERSIONS = sorted(TABLES)


def _images(n=2, seed=0):
  return tf.random.stateless_uniform((n, 32, 32, 3), seed=(seed, 3))


@pytest.fixture(scope="module", params=VERSIONS)
def built(request):
  """(version, encoder, decoder), built on a batch of images."""
  encoder, decoder = grouped_vae(request.param)
  mean, _ = encoder(_images())
  decoder(mean)
  return request.param, encoder, decoder


def _row_outputs(layers, inputs):
  """Each row's output shape (without the batch axis) and its params."""
  rows = []
  for layer in layers:
    inputs = layer(inputs)
    rows.append((tuple(inputs.shape[1:]), layer.count_params()))
  return rows, inputs


@pytest.mark.slow
def test_total_parameter_counts(built):
  version, encoder, decoder = built
  encoded, decoded, total = TABLES[version]["totals"]
  assert encoder.count_params() == encoded
  assert decoder.count_params() == decoded
  assert encoded + decoded == total


def test_every_row_has_the_tables_shape_and_parameters(built):
  version, encoder, decoder = built
  table = TABLES[version]
  rows, features = _row_outputs(encoder.trunk.layers, _images())
  assert rows == table["encoder"]
  for head in (encoder.mean, encoder.log_variance):
    assert _row_outputs([head], features)[0] == [table["head"]]
  assert encoder.latent_channels == table["head"][0][-1]
  rows, images = _row_outputs(decoder.layers, encoder(_images())[0])
  assert rows == table["decoder"]
  assert images.shape == (2, 32, 32, 3)


def test_mean_and_log_variance_heads_are_separate_weights(built):
  _, encoder, _ = built
  mean_weights = {v.ref() for v in encoder.mean.trainable_variables}
  variance_weights = {
      v.ref() for v in encoder.log_variance.trainable_variables}
  assert len(mean_weights) == len(variance_weights) == 2
  assert not mean_weights & variance_weights
  mean, log_variance = encoder(_images())
  assert mean.shape == log_variance.shape
  assert not np.allclose(mean, log_variance)


def test_quantization_noise_only_in_training(built):
  version, encoder, _ = built
  images = _images()
  features = encoder.trunk(images)
  expected = encoder.mean(features), encoder.log_variance(features)
  for training in (False, None):
    for output, wanted in zip(encoder(images, training=training), expected):
      np.testing.assert_array_equal(output, wanted)
  first = encoder(images, training=True)[0]
  second = encoder(images, training=True)[0]
  assert not np.allclose(first, expected[0])
  assert not np.allclose(first, second)
  # Without the flag, training changes nothing (the trunk has no dropout).
  quiet, _ = grouped_vae(version, noise=False)
  quiet(images)
  quiet.set_weights(encoder.get_weights())
  np.testing.assert_allclose(quiet(images, training=True)[0], expected[0],
                             rtol=1e-6, atol=1e-6)


def test_the_noise_is_uniform_in_half_a_step(built):
  """A mean head that copies one feature shows the noise itself."""
  probe, _ = grouped_vae(built[0])
  images = _images(n=64)
  probe(images)
  head = probe.mean.layers[-1]
  kernel = np.zeros(head.kernel.shape, np.float32)
  centre = head.kernel.shape[0] // 2
  kernel[centre, centre, 0, 0] = 1.  # output 0 reads input 0 at one tap
  head.set_weights([kernel, np.zeros(head.bias.shape, np.float32)])
  noise = probe(images, training=True)[0] - probe(images)[0]
  noise = noise[..., 0].numpy()
  assert np.all(np.abs(noise) <= .5 + 1e-5)  # rounding
  assert np.std(noise) == pytest.approx(12 ** -.5, rel=.2)


def test_gradients_reach_every_weight_on_cpu(built):
  """Grouped Conv2D trains on CPU (Keras compiles it with XLA there)."""
  _, encoder, decoder = built
  images = _images()
  with tf.GradientTape() as tape:
    mean, log_variance = encoder(images, training=True)
    loss = (tf.reduce_sum((decoder(mean) - images) ** 2)
            + tf.reduce_sum(log_variance ** 2))
  variables = encoder.trainable_variables + decoder.trainable_variables
  for gradient in tape.gradient(loss, variables):
    assert gradient is not None and np.any(gradient != 0)


def test_unknown_version_is_refused():
  with pytest.raises(ValueError, match="Unknown version 'v3'.*v1"):
    grouped_vae("v3")
