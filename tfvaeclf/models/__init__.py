"""Model kinds, registered by name so train/evaluate/codec/export find them.

Every kind subclasses `base.CompressiveClassifier` and so honours one
contract: `call` returns a dict of outputs and loss terms, `compress(images)`
returns `(strings, latent_shape)`, `decompress` inverts it, `classify` maps a
decoded latent to logits and, when the kind has a decoder, `reconstruct` maps
it back to an image.
"""

from tfvaeclf.models.registry import build, get, names, register
# Importing a kind's module registers it.
from tfvaeclf.models import beta_vae, grouped_vae, joint  # noqa: F401

__all__ = ["build", "get", "names", "register"]
