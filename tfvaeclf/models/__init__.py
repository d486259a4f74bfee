"""Model kinds, registered by name so train/evaluate/codec/export find them.

Every kind subclasses `base.CompressiveClassifier` and so honours one
contract: `call` returns a dict of outputs and loss terms, `compress(images)`
returns `(strings, latent_shape)`, `decompress` inverts it, `classify` maps a
decoded latent to logits and, when the kind has a decoder, `reconstruct` maps
it back to an image. The exception is `classifier`, the uncompressed
reference: it has no coder (`coder is None`) and classifies images.
"""

import importlib
import pkgutil

from tfvaeclf.models.registry import build, get, names, register

# Importing a kind's module registers it; every module of this package is
# imported, so a new kind is one new file here and nothing else.
for _module in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["build", "get", "names", "register"]
