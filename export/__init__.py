"""Exports a trained model dir as a deployment bundle.

    python -m export --model_dir=DIR --out=BUNDLE [--calibration_examples=N]
    tfvaeclf-export ...   (the same, installed)

The bundle (layout in `tfvaeclf.coding.bundle`) holds TFLite encoders for the
board, the frozen coding tables, and a SavedModel for the server (on stock
TensorFlow ops); both sides check it against its manifest before use
(`tfvaeclf.edge.EdgeEncoder`, `tfvaeclf.serve.bundle_server.BundleServer`).

These files are the package `export` in a checkout (`python -m export`) and
`tfvaeclf.export` once installed; code outside them imports
`tfvaeclf.export`. A process holds them under one name only: under both,
each module would run twice (absl flags defined twice, two classes each).
"""

import sys

# First, as in every entry point: `python -m export` runs this file before
# __main__, and cli quiets TensorFlow's start-up logs before it loads.
from tfvaeclf import cli  # noqa: F401  pylint: disable=unused-import

_OTHER = "tfvaeclf.export" if __name__ == "export" else "export"
if _OTHER in sys.modules:
  raise ImportError(f"{__name__} imported after {_OTHER}: the same files; "
                    f"import tfvaeclf.export only")

from .exporter import calibration_images, export_bundle  # noqa: E402

__all__ = ["calibration_images", "export_bundle"]
