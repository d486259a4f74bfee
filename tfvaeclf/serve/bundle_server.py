"""A bundle's server side: file bytes -> decoded latents -> classes.

`BundleServer` checks a file against the bundle's `CodecSpec`, decodes each
of its streams by the stream's type (`tfvaeclf.coding.streams`: its server
half, with the bundle's frozen tables and the project's range decoder,
whose work is bounded whatever the bytes), and runs the SavedModel's
signatures (`export.server_model` writes them) on the decoded latent: the
classifier's, and the sub-models an indexed stream predicts its tables
with.

The signatures run in a graph-mode session, numpy in and numpy out, at a few
fixed batch sizes, so that a server's memory stays flat however many
batches it runs: each eager tensor leaks a few hundred bytes (TensorFlow
2.14 on Python 3.11: every input and output of every call), and TensorFlow
keeps state for each input shape it has run (1,024 batch sizes: 134 MB).

Imports the coding core and TensorFlow's SavedModel loader only: neither
TFC, nor the model code, nor the exporter.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from tfvaeclf.coding import bundle, latent_decoder, streams
from tfvaeclf.coding.codec_spec import CodecSpec
from tfvaeclf.errors import BitstreamError, BundleError

__all__ = ["BATCH_SIZES", "BundleServer"]

# The batch sizes the signatures run at: a batch is padded up to the next
# one (the pad rows' outputs are dropped; each row's are the same, bit for
# bit), and a larger one runs in slices of the last.
BATCH_SIZES = tuple(2 ** k for k in range(9))


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
    self._session = _Session(os.path.join(bundle_dir, bundle.SERVER_DIR),
                             signatures)

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
    """Signature `name` on float32 batches `inputs` -> numpy outputs, run
    at BATCH_SIZES only."""
    inputs = {key: np.asarray(value, np.float32)
              for key, value in inputs.items()}
    rows = len(next(iter(inputs.values())))
    largest = BATCH_SIZES[-1]
    parts = []
    for start in range(0, max(rows, 1), largest):
      stop = min(start + largest, rows)
      size = next(size for size in BATCH_SIZES if size >= stop - start)
      outputs = self._session.run(name, {
          key: _pad(value[start:stop], size)
          for key, value in inputs.items()})
      parts.append({key: value[:stop - start]
                    for key, value in outputs.items()})
    return {key: np.concatenate([part[key] for part in parts])
            for key in parts[0]}

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


class _Session:
  """A SavedModel's signatures in a graph-mode session of their own: numpy
  in, numpy out, and no eager tensor made."""

  def __init__(self, saved_model_dir, names):
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    # The TF1 loader is the one that loads into a session; TF 2.14 logs that
    # it is deprecated (for the eager loader), which would read as a fault
    # in every server's log.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
      with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.load(
            session, [tf.saved_model.SERVING], saved_model_dir)
    finally:
      logger.setLevel(level)
    self._calls = {}
    for name in names:
      signature = meta_graph.signature_def[name]
      feeds, fetches = sorted(signature.inputs), sorted(signature.outputs)
      self._calls[name] = feeds, fetches, session.make_callable(
          [signature.outputs[key].name for key in fetches],
          [signature.inputs[key].name for key in feeds])

  def run(self, name, inputs):
    """Signature `name` on {input name: array} -> {output name: array}."""
    feeds, fetches, call = self._calls[name]
    return dict(zip(fetches, call(*(inputs[key] for key in feeds))))


def _pad(value, size):
  """`value` with zero rows appended up to `size` rows."""
  return np.pad(value, [(0, size - len(value))] + [(0, 0)] * (value.ndim - 1))
