"""How an image file becomes a network's input, with numpy and Pillow only.

A `Preprocessing` is what training did to a file: decode it (Pillow, the
first frame of an animation, no EXIF rotation), convert it to the network's
mode ("L" or "RGB": palette, CMYK, RGBA (alpha dropped), greyscale, 16-bit
(top byte) ...), and, for a model trained with `--image_size`, fit it to
the size keeping its aspect ratio: `cover` resizes it to cover the size
(bilinear, antialiased when shrinking) and crops the centre; `pad` shrinks
it only if it is larger and pads it to the size with black, centred (what
keeps 28x28 digits whole in a 32x32 network). The network then takes
`pixel / 255`.
Training's data pipeline runs these very functions (`tfvaeclf.data`), and a
model dir and a bundle record them (`record`), so `codec compress`, the edge
runtime and training turn a file into the same pixels.

A model trained without resizing (MNIST, CIFAR-10 ...) took its images as
they came: it refuses files of another size or mode rather than silently
feeding it an input that training never made, from the file's header,
before a pixel is decoded.

Kept apart from `tfvaeclf.data` (which needs TensorFlow) because the edge
runtime reads the images it codes on boards that have no TensorFlow.
"""

import dataclasses
import io
import os

import numpy as np
from PIL import Image

from tfvaeclf import fileio
from tfvaeclf.errors import ImageFileError

__all__ = ["ImageFileError", "Preprocessing", "FITS", "read_image_files",
           "write_png"]

_MODES = {1: "L", 3: "RGB"}
# A record's fixed fields: what this tfvaeclf does, named so that a newer
# way is refused instead of misapplied.
_DECODE = "pillow_first_frame"
_CONVERT = "any_mode"
# How each --image_fit reaches the size, by its record name.
_RESIZE = {"cover": "cover_bilinear_center_crop",
           "pad": "contain_bilinear_center_pad"}
FITS = tuple(_RESIZE)
_SCALE = "pixel/255"
# 16-bit modes, whose top byte is the 8-bit value (as TensorFlow's decoders
# give it); Pillow's own conversion would clip at 255.
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _one_line(error):
  return " ".join(str(error).split())


def _covering(shape, size):
  """The (H, W) that covers `size` at `shape`'s aspect ratio: computed in
  float32 and rounded half to even, as training's TensorFlow resize did."""
  shape = np.float32(shape)
  scale = np.max(np.float32(size) / shape)
  return tuple(int(d) for d in np.maximum(np.rint(shape * scale), size))


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How a file becomes a network input of `image_shape`.

  Attributes:
    image_shape: (H, W, C) of the input, C=1 ("L") or 3 ("RGB").
    resize: whether a file of another mode or size is converted and fitted
      to the size as training did, or refused (training took its images as
      they came).
    fit: how a resized file reaches the size, one of FITS.
    refusal: why such a file is refused, for the error message.
  """
  image_shape: tuple
  resize: bool = False
  fit: str = "cover"
  refusal: str = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    shape = tuple(int(d) for d in self.image_shape)
    if len(shape) != 3 or shape[2] not in _MODES:
      raise ValueError(f"image_shape needs (H, W, 1 or 3), got {shape}")
    object.__setattr__(self, "image_shape", shape)
    if self.fit not in FITS:
      raise ValueError(f"fit must be one of {FITS}, got {self.fit!r}")
    if self.refusal is None:
      object.__setattr__(self, "refusal", (
          "the model was trained on images as they came; retrain it with "
          f"--image_size={shape[0]} to take images of any size and mode"))

  @property
  def mode(self):
    return _MODES[self.image_shape[2]]

  def record(self):
    """The JSON a model dir's config and a bundle's manifest hold."""
    return {"decode": _DECODE, "mode": self.mode,
            "size": list(self.image_shape[:2]),
            "convert": _CONVERT if self.resize else None,
            "resize": _RESIZE[self.fit] if self.resize else None,
            "scale": _SCALE}

  @classmethod
  def from_record(cls, record, image_shape, refusal=None):
    """The preprocessing `record` describes, for a model of `image_shape`.

    A None record (a model dir or bundle from before records) takes files
    as they come, refusing others with `refusal`. ValueError if the record
    does not fit the model, or names a step this tfvaeclf does not know.
    """
    if record is None:
      return cls(image_shape, refusal=refusal)
    fit = {name: fit for fit, name in _RESIZE.items()}.get(
        record.get("resize"), "cover")
    expected = cls(image_shape, resize=record.get("resize") is not None,
                   fit=fit)
    if record != expected.record():
      raise ValueError(
          f"preprocessing {record} is not one this tfvaeclf applies to a "
          f"{tuple(image_shape)} model (update tfvaeclf)")
    return expected

  def _converted(self, image):
    """A decoded Pillow image, its pixels read: in the model's mode if
    converting, else as it is."""
    if not self.resize:
      return image.copy()
    if image.mode in _SIXTEEN_BIT:
      image = Image.fromarray((np.asarray(image, np.uint16) >> 8).astype(
          np.uint8))
    return image.convert(self.mode)

  def _check_as_it_comes(self, image, name):
    """ImageFileError naming `name` if the model takes images as they came
    and `image` (decoded, or only its header read) is of another size or
    mode."""
    height, width = self.image_shape[:2]
    if not self.resize and (image.size, image.mode) != ((width, height),
                                                         self.mode):
      raise ImageFileError(
          f"{name}: is {image.height}x{image.width} mode {image.mode}, "
          f"expected {height}x{width} mode {self.mode} ({self.refusal})")

  def _fitted(self, image, name):
    """A converted image -> the uint8 (H, W, C) input; ImageFileError
    naming `name` for a mode or size the model refuses."""
    height, width = size = self.image_shape[:2]
    self._check_as_it_comes(image, name)
    if image.size != (width, height):
      image = (self._padded(image, size) if self.fit == "pad" else
               self._cropped(image, size, name))
    return np.asarray(image).reshape(self.image_shape)

  @staticmethod
  def _cropped(image, size, name):
    """Resized to cover `size` (H, W), the centre cropped; ImageFileError
    naming `name` if covering would take more pixels than an image may
    have (a 1-pixel-wide strip would cover billions)."""
    height, width = size
    covering = _covering((image.height, image.width), size)
    if covering[0] * covering[1] > Image.MAX_IMAGE_PIXELS:
      raise ImageFileError(
          f"{name}: is {image.height}x{image.width}, too far from the "
          f"model's {height}x{width} shape to cover it (it would take "
          f"{covering[0]}x{covering[1]} pixels)")
    top, left = ((c - s) // 2 for c, s in zip(covering, size))
    image = image.resize(covering[::-1], Image.Resampling.BILINEAR)
    return image.crop((left, top, left + width, top + height))

  @staticmethod
  def _padded(image, size):
    """Shrunk to fit inside `size` (H, W) if larger, centred on black."""
    height, width = size
    scale = min(1., height / image.height, width / image.width)
    if scale < 1.:
      image = image.resize((max(1, round(image.width * scale)),
                            max(1, round(image.height * scale))),
                           Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, (width, height))
    canvas.paste(image, ((width - image.width) // 2,
                         (height - image.height) // 2))
    return canvas

  def load(self, file, name=None):
    """An image file (path or file object) -> its uint8 (H, W, C) input;
    ImageFileError, in one line naming `name` (default: the path), if it
    cannot be."""
    name = name or os.fspath(file)
    try:
      with Image.open(file) as image:
        # Bounded work: the header is refused before a pixel is decoded
        # (Pillow only warns below twice its limit).
        if image.width * image.height > Image.MAX_IMAGE_PIXELS:
          raise ImageFileError(
              f"{name}: is {image.height}x{image.width}, more than the "
              f"{Image.MAX_IMAGE_PIXELS} pixels an image may have")
        self._check_as_it_comes(image, name)
        image = self._converted(image)
    except (OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as e:
      raise ImageFileError(
          f"{name}: not a readable image ({_one_line(e)})") from None
    return self._fitted(image, name)

  def decode(self, file_bytes):
    """The bytes of an image file -> its uint8 (H, W, C) input: what
    training's pipeline runs on the files it reads."""
    return self.load(io.BytesIO(bytes(file_bytes)), "image")

  def fit_pixels(self, pixels):
    """A decoded uint8 (h, w, 1 or 3) image -> the input, converted and
    resized as a file would be: what training's pipeline runs on datasets
    that come decoded."""
    pixels = np.asarray(pixels)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
      pixels = pixels[..., 0]
    return self._fitted(self._converted(Image.fromarray(pixels)), "image")


def read_image_files(paths, preprocessing):
  """The images in `paths` as a uint8 (N, H, W, C) array, preprocessed.

  `preprocessing` is a `Preprocessing`, or an (H, W, C) shape for files
  that have it already (no resizing). ImageFileError, in one line, names the
  first file that cannot be turned into the model's input.
  """
  if not isinstance(preprocessing, Preprocessing):
    preprocessing = Preprocessing(preprocessing)
  out = np.empty((len(paths), *preprocessing.image_shape), np.uint8)
  for i, path in enumerate(paths):
    out[i] = preprocessing.load(path)
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
