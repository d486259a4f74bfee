"""Bytes a board sent -> classes: the one place the server decodes.

Every ingress (HTTP, MQTT), the batcher, the tests and the benchmark go
through `Core.classify_batch`, so what the server accepts, how it decodes and
what it answers are decided here alone.

A payload is a one-image message or a tfvaeclf file (one image or several),
told apart by its first bytes and checked whole by the bundle's `CodecSpec`.
`bundle_server.BundleServer` decodes it with the project's bounded range
decoder (work bounded by the latent size, whatever the bytes), subtracting a
dithered model's shared dither of the payload's seed and counter. The decoded
latents of a whole batch are classified together by the bundle's SavedModel,
which holds only TensorFlow's own ops (at a few fixed batch sizes, so that
the server's memory stays flat: `bundle_server.BATCH_SIZES`).
"""

import dataclasses

import numpy as np

from tfvaeclf.coding import bitstream
from tfvaeclf.errors import BitstreamError
from tfvaeclf.serve import bundle_server

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

  def __init__(self, bundle_dir, max_images=bitstream.MAX_IMAGES):
    self._server = bundle_server.BundleServer(bundle_dir)
    self.max_images = max_images
    self.fingerprint = self._server.codec.fingerprint.hex()
    self.class_names = list(self._server.class_names)

  def classify_batch(self, payloads):
    """bytes payloads -> per payload, a result dict or a `Refusal`.

    A result holds, per image of the payload, the class name ("classes"),
    its index ("indices") and the probabilities of every class, plus the
    model's "fingerprint". One bad payload never affects another.
    """
    decoded = [self._read(payload) for payload in payloads]
    readable = [d for d in decoded if not isinstance(d, Refusal)]
    latents = iter(self._server.decode_many(readable) if readable else [])
    decoded = [d if isinstance(d, Refusal) else next(latents)
               for d in decoded]
    decoded = [_refusal(d) if isinstance(d, BitstreamError) else d
               for d in decoded]
    accepted = [d for d in decoded if not isinstance(d, Refusal)]
    if not accepted:
      return decoded
    outputs = self._run(accepted)
    results, start = [], 0
    for d in decoded:
      if isinstance(d, Refusal):
        results.append(d)
        continue
      stop = start + len(d)
      results.append(self._result(outputs, start, stop))
      start = stop
    return results

  def _read(self, payload):
    """Checks one payload: what it holds (`CodedImages`), or a Refusal."""
    try:
      coded = self._server.codec.read(bytes(payload))
    except BitstreamError as e:
      return _refusal(e)
    if not 0 < coded.num_images <= self.max_images:
      return Refusal("bad_input", f"payload holds {coded.num_images} "
                     f"images, the server takes 1 to {self.max_images}")
    return coded

  def _run(self, accepted):
    """The SavedModel on the latents of every accepted payload, in order."""
    return self._server.classify(np.concatenate(accepted))

  def _result(self, outputs, start, stop):
    indices = outputs["classes"][start:stop].tolist()
    probabilities = outputs["probabilities"][start:stop].astype(float)
    return {"classes": [self.class_names[i] for i in indices],
            "indices": indices,
            "probabilities": np.round(probabilities, 6).tolist(),
            "fingerprint": self.fingerprint}


def _refusal(error):
  return Refusal("bad_input", " ".join(str(error).split()))
