"""A coder with a new stream layout, known only to this file: the latent
split by channels into two channel-table streams, both read by the
classifier. Registered by name here, it trains, exports, and is coded by
the board and decoded and classified by the server as by the model itself,
with no file under export/, tfvaeclf/serve/ or tfvaeclf/edge/ knowing it:
they dispatch on the stream types of its plan."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import codec, coders, data, export, model_dir, models, train
from tfvaeclf.coders.factorized import FactorizedCoder
from tfvaeclf.coding import streams
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.serve.bundle_server import BundleServer

from tests.conftest import MNIST_ARGS, SMALL_JOINT, run_spec

NAME = "split_channels"
RUNTIMES = ("export", os.path.join("tfvaeclf", "serve"),
            os.path.join("tfvaeclf", "edge"))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class SplitChannelsCoder(coders.Coder):
  """Two factorized coders, one per half of the channels: one string per
  half ("first", "second"), the latent their concatenation."""

  def __init__(self, channels, **kwargs):
    super().__init__(**kwargs)
    self.split = channels // 2
    self.halves = [FactorizedCoder(self.split, name="first"),
                   FactorizedCoder(channels - self.split, name="second")]

  def _halves(self, latent):
    return latent[..., :self.split], latent[..., self.split:]

  @property
  def frozen(self):
    return all(half.frozen for half in self.halves)

  def call(self, latent, training=False):
    coded = [half(part, training=training)
             for half, part in zip(self.halves, self._halves(latent))]
    return (tf.concat([c[0] for c in coded], -1),
            tf.add_n([c[1] for c in coded]))

  def freeze(self):
    for half in self.halves:
      half.freeze()

  def tables(self):
    return {f"{half.name}/{key}": value for half in self.halves
            for key, value in half.tables().items()}

  def load_tables(self, tables):
    for half in self.halves:
      half.load_tables({key: tables[f"{half.name}/{key}"]
                        for key in ("cdf", "cdf_offset")})

  def stream_plan(self, latent_shape):
    return [half.channel_stream(half.name, latent_shape)
            for half in self.halves]

  def edge_outputs(self, latent):
    return dict(zip((half.name for half in self.halves),
                    self._halves(latent)))

  def compress(self, latent):
    return tuple(half.compress(part)[0]
                 for half, part in zip(self.halves, self._halves(latent)))

  def decompress(self, strings, spatial_shape):
    return tf.concat([half.decompress((s,), spatial_shape)
                      for half, s in zip(self.halves, strings)], -1)

  def decode(self, strings, spatial_shape):
    return tf.concat([half.decode((s,), spatial_shape)
                      for half, s in zip(self.halves, strings)], -1)


if NAME not in coders.coder_names():
  coders.register(NAME)(lambda channels, coding_rank: SplitChannelsCoder(
      channels))


def test_no_runtime_file_knows_the_coder():
  for folder in RUNTIMES:
    for root, _, names in os.walk(os.path.join(REPO, folder)):
      for name in names:
        if name.endswith(".py"):
          with open(os.path.join(root, name)) as f:
            assert NAME not in f.read(), os.path.join(root, name)


def test_its_plan_is_two_latent_channel_streams():
  coder = coders.build_coder(NAME, 8)
  coder(tf.zeros((1, 4, 4, 8)))
  coder.freeze()
  plan = coder.stream_plan((4, 4))
  assert [s.TABLES for s in plan] == ["channel", "channel"]
  assert [s["name"] for s in streams.manifest_entries(plan)] == [
      "first", "second"]
  assert streams.input_shape(plan) == [4, 4, 8]


@pytest.mark.slow
def test_board_and_server_code_it_as_the_model(mnist, tmp_path):
  """Two training steps, an export, and the board's bytes are the model's;
  the server's latents and classes are the model's own decode's."""
  config = models.get("joint").Config(**SMALL_JOINT, entropy_model=NAME)
  train.run_training(run_spec(
      tmp_path / "run", "joint", config, epochs=1, batch_size=32,
      learning_rate=3e-3, seed=0, train_subset=64), mnist, verbose=0)
  loaded = model_dir.load(str(tmp_path / "run"))
  out = str(tmp_path / "bundle")
  export.export_bundle(loaded, out,
                       export.calibration_images(loaded.config, 20))
  images = next(iter(data.load(**MNIST_ARGS).test.batch(20)))[0].numpy()
  file_bytes = EdgeEncoder(out).encode_file(images)
  assert file_bytes == codec.compress_images(loaded, images)
  served = BundleServer(out, loaded.fingerprint)
  for encoded in (file_bytes, EdgeEncoder(out, int8=True).encode_file(images)):
    latents = served.decode(encoded)
    model_latents = codec.decode_latent(loaded, encoded).numpy()
    np.testing.assert_array_equal(latents, model_latents)
    np.testing.assert_array_equal(
        served.classify(latents)["classes"],
        np.argmax(loaded.model.classify(model_latents), -1))
