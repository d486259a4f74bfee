"""Every error a user can cause, at the bottom of the import graph.

`tfvaeclf.cli.run` reports any `UserError` in one line with exit code 2, and
imports only this module to know them: a command (the report, say) loads no
more than it uses, and the edge runtime, which imports this module on boards,
finds the standard library alone here. Bugs are not `UserError`s: they keep
their tracebacks.

Each subclass is also reachable under its old home (`bitstream.BitstreamError`,
`data.ImageFileError`, `model_dir.ModelDirError`, ...), where it is raised.
"""

__all__ = ["UserError", "BitstreamError", "ImageFileError",
           "DatasetUnavailableError", "ModelDirError", "BundleError",
           "BaselineUnavailableError", "ClusterConfigError"]


class UserError(Exception):
  """Anything a user caused: bad arguments, a missing or foreign input."""


class BitstreamError(UserError, ValueError):
  """A file that is not a valid tfvaeclf bitstream for this model."""


class ImageFileError(UserError):
  """A user's image file can't be used as is; one line names the file."""


class DatasetUnavailableError(UserError):
  """No source has the data, or it is corrupt; one line says how to get it."""


class ModelDirError(UserError):
  """A model dir that is missing, unfinished or inconsistent."""


class BundleError(UserError):
  """A bundle that is missing, altered, or made for another model."""


class BaselineUnavailableError(UserError):
  """A codec whose encoder is not installed; one line saying how to get it."""


class ClusterConfigError(UserError, ValueError):
  """TF_CONFIG is missing or does not describe this process's cluster."""
