"""Exports a trained model dir as a deployment bundle.

    python -m export --model_dir=DIR --out=BUNDLE [--calibration_examples=N]

The bundle (layout in `tfvaeclf.coding.bundle`) holds TFLite encoders for the
board, the frozen coding tables, and a SavedModel for the server (on stock
TensorFlow ops); both sides check it against its manifest before use
(`tfvaeclf.edge.EdgeEncoder`, `tfvaeclf.serve.bundle_server.BundleServer`).
"""

# First, as in every entry point: `python -m export` runs this file before
# __main__, and cli quiets TensorFlow's start-up logs before it loads.
from tfvaeclf import cli  # noqa: F401  pylint: disable=unused-import

from export.exporter import calibration_images, export_bundle  # noqa: E402

__all__ = ["calibration_images", "export_bundle"]
