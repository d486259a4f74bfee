"""Reading a user's image files and writing PNGs, with numpy and Pillow only.

Kept apart from `tfvaeclf.data` (which needs TensorFlow) because the edge
runtime reads the images it codes on boards that have no TensorFlow.
"""

import numpy as np
from PIL import Image

from tfvaeclf import fileio
from tfvaeclf.errors import ImageFileError

__all__ = ["ImageFileError", "read_image_files", "write_png"]


def read_image_files(paths, image_shape):
  """The images in `paths` as a uint8 (N, H, W, C) array.

  Each file must already have `image_shape` (8-bit grayscale for C=1, RGB for
  C=3): a user's file of another size or kind is refused rather than silently
  turned into a different input.
  """
  height, width, channels = image_shape
  modes = {1: "L", 3: "RGB"}
  if channels not in modes:
    raise ValueError(f"image_shape needs 1 or 3 channels, got {image_shape}")
  out = np.empty((len(paths), height, width, channels), np.uint8)
  for i, path in enumerate(paths):
    try:
      with Image.open(path) as img:
        mode, (w, h), pixels = img.mode, img.size, np.asarray(img)
    except (OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
      reason = " ".join(str(e).split())
      raise ImageFileError(
          f"{path}: not a readable image ({reason})") from None
    if (h, w, mode) != (height, width, modes[channels]):
      raise ImageFileError(
          f"{path}: is {h}x{w} mode {mode}, expected {height}x{width} mode "
          f"{modes[channels]} (images are not resized)")
    out[i] = pixels.reshape(height, width, channels)
  return out


def write_png(path, image_uint8_hwc):
  """Writes a uint8 HxW, HxWx1 or HxWx3 image as a PNG, atomically.

  A reader never sees half a file (see `fileio`).
  """
  image = np.asarray(image_uint8_hwc)
  if image.dtype != np.uint8 or not (
      image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
    raise ValueError(f"write_png needs uint8 HxW, HxWx1 or HxWx3, "
                     f"got {image.dtype} {image.shape}")
  if image.ndim == 3 and image.shape[2] == 1:
    image = image[..., 0]
  with fileio.atomic_writer(path) as f:
    Image.fromarray(image).save(f, format="PNG")
