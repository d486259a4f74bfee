"""Edge runtime: what a board needs to code images, without TensorFlow.

Only numpy is imported here (and by every module of this package, with
Pillow for the command line), plus a TFLite runtime when an encoder is
loaded: TensorFlow's own only where no runtime is installed (`interpreter`).
The coding itself is the shared core's (`tfvaeclf.coding`).
"""

from tfvaeclf.edge.encoder import EdgeEncoder
from tfvaeclf.errors import BundleError

__all__ = ["BundleError", "EdgeEncoder"]
