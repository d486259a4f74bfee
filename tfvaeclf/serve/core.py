"""Bytes a board sent -> classes: the one place the server decodes.

Every ingress (HTTP, MQTT), the batcher, the tests and the benchmark go
through `Core.classify_batch`, so what the server accepts, how it decodes and
what it answers are decided here alone.

Today a payload is a tfvaeclf file (one image or several), checked whole by
the bundle's `CodecSpec`. Its strings are then range-decoded by the bounded C
decoder (`tfvaeclf.edge.native`) first: a string it refuses is refused here,
and one it accepts decodes in TFC's op, which the bundle's SavedModel still
runs, in the same bounded work. A crafted payload therefore cannot hang the
server in TFC's decoder. The accepted images of a whole batch are classified
in one call of the SavedModel.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from export import server
from tfvaeclf.codec_spec import CodecSpec
from tfvaeclf.edge import bundle, native
from tfvaeclf.errors import BitstreamError

__all__ = ["Core", "Refusal"]


@dataclasses.dataclass(frozen=True)
class Refusal:
  """A payload the core will not classify.

  Attributes:
    reason: a short label, the metrics' `reason` (e.g. "bad_input").
    message: one line for the sender.
  """
  reason: str
  message: str


class Core:
  """A bundle's server side: decode-and-classify for a batch of payloads.

  Args:
    bundle_dir: a bundle from `python -m export` (its `server/` is used).
    max_images: images one payload may hold; a file claiming more is refused
      before anything is decoded.

  Raises:
    BundleError: the bundle is missing, altered or of another model.
  """

  def __init__(self, bundle_dir, max_images=256):
    # The loaded SavedModel is kept: its signatures need it alive.
    self._saved, manifest = server.load(bundle_dir)
    self._classify = self._saved.signatures["classify"]
    self._codec = CodecSpec.from_manifest(manifest)
    self._tables = bundle.read_tables(bundle_dir, manifest)
    self._shapes = {stream["name"]: tuple(stream["shape"])
                    for stream in manifest["streams"]}
    self.max_images = max_images
    self.fingerprint = self._codec.fingerprint.hex()
    self.class_names = list(manifest["model"]["class_names"])

  def classify_batch(self, payloads):
    """bytes payloads -> per payload, a result dict or a `Refusal`.

    A result holds, per image of the payload, the class name ("classes"),
    its index ("indices") and the probabilities of every class, plus the
    model's "fingerprint". One bad payload never affects another.
    """
    coded = [self._unpack(payload) for payload in payloads]
    accepted = [c for c in coded if not isinstance(c, Refusal)]
    if not accepted:
      return coded
    outputs = self._run(accepted)
    results, start = [], 0
    for c in coded:
      if isinstance(c, Refusal):
        results.append(c)
        continue
      stop = start + c.num_images
      results.append(self._result(outputs, start, stop))
      start = stop
    return results

  def _unpack(self, payload):
    """Checks a payload and pre-decodes its strings: CodedImages or Refusal."""
    try:
      coded = self._codec.unpack(bytes(payload))
    except BitstreamError as e:
      return Refusal("bad_input", " ".join(str(e).split()))
    if not 0 < coded.num_images <= self.max_images:
      return Refusal("bad_input", f"payload holds {coded.num_images} images, "
                     f"the server takes 1 to {self.max_images}")
    for name, strings in zip(self._codec.stream_names, coded.strings):
      tables, _ = self._tables[name]
      try:
        _, ok = native.decode_channel(list(strings), tables,
                                      self._shapes[name], check=False)
      except ValueError:  # an escape or value the coder cannot hold
        ok = np.zeros(1, bool)
      if not ok.all():
        return Refusal("bad_input", "payload does not decode (corrupt or "
                       "crafted range-coded string)")
    return coded

  def _run(self, accepted):
    """The SavedModel on the images of every accepted payload, in order.

    A dithered model draws image i's dither from row i of its file's seed:
    such payloads are classified one call each, so that each keeps its rows.
    """
    groups = ([accepted] if self._codec.dither_seed is None
              else [[c] for c in accepted])
    parts = [self._call([[s for c in group for s in c.strings[i]]
                         for i in range(self._codec.num_streams)],
                        group[0].dither_seed)
             for group in groups]
    return {key: np.concatenate([part[key] for part in parts])
            for key in parts[0]}

  def _call(self, strings, dither_seed):
    inputs = {name: tf.constant(s, tf.string)
              for name, s in zip(self._codec.stream_names, strings)}
    if dither_seed is not None:
      inputs[server.DITHER_SEED] = tf.constant(dither_seed, tf.int64)
    return {key: value.numpy()
            for key, value in self._classify(**inputs).items()}

  def _result(self, outputs, start, stop):
    indices = outputs["classes"][start:stop].tolist()
    probabilities = outputs["probabilities"][start:stop].astype(float)
    return {"classes": [self.class_names[i] for i in indices],
            "indices": indices,
            "probabilities": np.round(probabilities, 6).tolist(),
            "fingerprint": self.fingerprint}
