"""tfvaeclf: compress images on the edge, classify them on the server.

Importing the package is light on purpose: the edge runtime (`tfvaeclf.edge`)
must work on boards without TensorFlow, so nothing here imports it.
"""

__version__ = "0.1.0"
