"""Writes that land whole or not at all.

Every file a user asked for (bitstreams, images, reports, model metadata) is
written to a temporary file beside its target and renamed over it, so a
crash or a bad input never leaves a half-written output behind.
"""

import contextlib
import json
import os
import tempfile

__all__ = ["atomic_writer", "numbered_paths", "write_bytes", "write_json"]


def _umask():
  mask = os.umask(0)
  os.umask(mask)
  return mask


@contextlib.contextmanager
def atomic_writer(path, mode="wb"):
  """Yields a file object; `path` appears only if the block succeeds."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(
      dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
  try:
    with os.fdopen(fd, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes files 0600
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


def numbered_paths(path, count, default_ext=""):
  """Where `count` outputs asked for as `path` go: `path` itself for one,
  else NAME_0.EXT, NAME_1.EXT, ... (EXT: the path's, else `default_ext`)."""
  if count == 1:
    return [path]
  stem, ext = os.path.splitext(path)
  return [f"{stem}_{i}{ext or default_ext}" for i in range(count)]


def write_bytes(path, data):
  with atomic_writer(path, "wb") as f:
    f.write(data)


def write_json(path, obj):
  with atomic_writer(path, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
