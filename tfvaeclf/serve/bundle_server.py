"""A bundle's server side: file bytes -> decoded latents -> classes.

`BundleServer` checks a file against the bundle's `CodecSpec`, decodes each
of its streams by the stream's type (`tfvaeclf.coding.streams`: its server
half, with the bundle's frozen tables and the project's range decoder,
whose work is bounded whatever the bytes), and runs the SavedModel's
signatures (`export.server_model` writes them) on the decoded latent: the
classifier's, and the sub-models an indexed stream predicts its tables
with.

Imports the coding core and TensorFlow's SavedModel loader only: neither
TFC, nor the model code, nor the exporter.
"""

import os

import numpy as np
import tensorflow as tf

from tfvaeclf.coding import bundle, latent_decoder, streams
from tfvaeclf.coding.codec_spec import CodecSpec
from tfvaeclf.errors import BitstreamError, BundleError

__all__ = ["BundleServer"]


class BundleServer:
  """A bundle's server side: file bytes -> decoded latents -> classes.

  Loads `server/` and the coding tables once they match the manifest
  (`expected_fingerprint`, 8 bytes, refuses a bundle of another model);
  raises BundleError in one line otherwise.

  Attributes:
    manifest: the bundle's checked manifest.
    codec: its `CodecSpec`, which every file is checked against.
    class_names: the model's class names, by class index.
    has_decoder: whether `reconstruct` exists.
  """

  def __init__(self, bundle_dir, expected_fingerprint=None):
    self.manifest = bundle.read_manifest(
        bundle_dir, (bundle.SERVER_DIR, bundle.TABLES), expected_fingerprint)
    signatures = self.manifest["server"]["signatures"]
    if bundle.SERVER_INPUT not in signatures["serving_default"]["inputs"]:
      raise BundleError(
          f"{bundle_dir}: its server/ decodes strings with TFC's ops (made "
          "by an older tfvaeclf); export the bundle again")
    self.codec = CodecSpec.from_manifest(self.manifest)
    self.class_names = self.manifest["model"]["class_names"]
    self.has_decoder = "reconstruct" in signatures
    self._plan = streams.read_plan(bundle_dir, self.manifest)
    self._signatures = tf.saved_model.load(
        os.path.join(bundle_dir, bundle.SERVER_DIR)).signatures

  def decode(self, data):
    """A file's or message's bytes -> float32 `[N, *latent_shape,
    channels]`, the signatures' input; BitstreamError in one line for bytes
    that are corrupt or not of this bundle's encoder side."""
    return self.decode_coded(self.codec.read(data))

  def decode_coded(self, coded):
    """`decode` of a file or message already read by `codec.read`."""
    (latents,) = self.decode_many([coded])
    if isinstance(latents, BitstreamError):
      raise latents
    return latents

  def decode_many(self, coded):
    """`decode_coded` of several files or messages in one call of the range
    decoder per dither seed (the per-call cost dominates one-image
    messages): per payload, its latents or the BitstreamError it alone
    raises. A payload that does not decode costs what one that does: the
    others are not decoded again."""
    results = [None] * len(coded)
    for seed in {c.dither_seed for c in coded}:
      group = [i for i, c in enumerate(coded) if c.dither_seed == seed]
      for i, result in zip(group, self._decode([coded[i] for i in group])):
        results[i] = result
    return results

  def _decode(self, coded):
    """Payloads of one dither seed -> per payload, its latents or its
    BitstreamError: every stream of the plan by its type's server half, the
    latent ones concatenated, all payloads' images in one batch."""
    strings = [[s for c in coded for s in c.strings[stream]]
               for stream in range(self.codec.num_streams)]
    indices = np.concatenate(
        [c.dither_index + np.arange(c.num_images) for c in coded])
    latents, failures = streams.decode_input(
        self._plan, strings, self._run, coded[0].dither_seed, indices)
    bounds = np.cumsum([0] + [c.num_images for c in coded]).tolist()
    return [latent_decoder.payload_error(failures[start:stop]) or
            latents[start:stop] for start, stop in zip(bounds, bounds[1:])]

  def _run(self, name, **inputs):
    outputs = self._signatures[name](
        **{key: tf.constant(value, tf.float32)
           for key, value in inputs.items()})
    return {key: value.numpy() for key, value in outputs.items()}

  def classify(self, latent_hat):
    """Decoded latents -> {"probabilities": [N, classes], "classes": [N]}."""
    return self._run("classify", **{bundle.SERVER_INPUT: latent_hat})

  def reconstruct(self, latent_hat):
    """Decoded latents -> uint8 images, for a model with a decoder."""
    if not self.has_decoder:
      raise BundleError("the bundle's model has no decoder: it classifies "
                        "but does not reconstruct images")
    return self._run("reconstruct",
                     **{bundle.SERVER_INPUT: latent_hat})["images"]
