"""The compressed file: a small checked header and the range-coded payload.

Layout (integers little-endian):

    magic        4 bytes  b"TFVC"
    version      u8       1, or 2 (FORMAT_VERSION) with a dither seed
    fingerprint  8 bytes  identifies the model (weights and coding tables)
    image_shape  3 x u16  H, W, C of the images that were coded
    latent_rank  u8, then latent_rank x u16: the spatial latent shape
    num_images   u32
    num_streams  u8       strings per image (1, or 2 with a hyper-latent)
    dither_seed  u32      version 2 only: the seed of the shared dither of
                          a universally quantized latent (`tfvaeclf.dither`)
    crc32        u32      of every byte of the file except these four
    payload      per image, per stream: LEB128 length, then the string

Version 1 (no dither) is what every other kind writes; readers take both.
A file is checked whole before anything is decoded, so a truncated, corrupted
or foreign file is refused with one line instead of yielding a wrong label.
"""

import dataclasses
import struct
import zlib

from tfvaeclf.errors import BitstreamError

__all__ = ["BitstreamError", "CodedImages", "MAGIC", "FORMAT_VERSION",
           "file_size", "pack", "unpack"]

MAGIC = b"TFVC"
FORMAT_VERSION = 2  # the newest; it adds the dither seed to version 1
_VERSIONS = (1, FORMAT_VERSION)
FINGERPRINT_BYTES = 8
_CRC = struct.Struct("<I")
_SEED = struct.Struct("<I")


@dataclasses.dataclass(frozen=True)
class CodedImages:
  """What a file holds: per image, one bytes string per stream."""
  fingerprint: bytes
  image_shape: tuple
  latent_shape: tuple
  strings: list  # strings[stream][image] -> bytes
  dither_seed: int = None  # set for a dithered coder's latents only

  @property
  def num_images(self):
    return len(self.strings[0]) if self.strings else 0


def _leb128(value):
  out = bytearray()
  while True:
    byte, value = value & 0x7F, value >> 7
    out.append(byte | (0x80 if value else 0))
    if not value:
      return bytes(out)


class _Reader:
  """Bounds-checked cursor: running off the end means a truncated file."""

  def __init__(self, data):
    self.data, self.pos = data, 0

  def take(self, n):
    if self.pos + n > len(self.data):
      raise BitstreamError("truncated file")
    chunk = self.data[self.pos:self.pos + n]
    self.pos += n
    return chunk

  def unpack(self, fmt):
    return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

  def leb128(self):
    value = shift = 0
    while True:
      (byte,) = self.take(1)
      value |= (byte & 0x7F) << shift
      if not byte & 0x80:
        return value
      shift += 7
      if shift > 35:
        raise BitstreamError("corrupted length field")


def file_size(latent_rank, string_lengths, dithered=False):
  """Bytes of the file `pack` writes for ONE image with these strings.

  What a sender pays to send that image alone: the rate to set against a
  classical codec's whole file.
  """
  header = 25 + 2 * latent_rank + _CRC.size + (_SEED.size if dithered else 0)
  return header + sum(len(_leb128(n)) + n for n in string_lengths)


def pack(coded):
  """CodedImages -> bytes."""
  if len(coded.fingerprint) != FINGERPRINT_BYTES:
    raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
  num_streams = len(coded.strings)
  if any(len(s) != coded.num_images for s in coded.strings):
    raise ValueError("every stream needs one string per image")
  dithered = coded.dither_seed is not None
  header = b"".join([
      MAGIC, struct.pack("<B", FORMAT_VERSION if dithered else 1),
      coded.fingerprint,
      struct.pack("<3H", *coded.image_shape),
      struct.pack(f"<B{len(coded.latent_shape)}H", len(coded.latent_shape),
                  *coded.latent_shape),
      struct.pack("<IB", coded.num_images, num_streams),
      _SEED.pack(coded.dither_seed) if dithered else b"",
  ])
  payload = b"".join(
      _leb128(len(coded.strings[stream][image])) +
      coded.strings[stream][image]
      for image in range(coded.num_images) for stream in range(num_streams))
  crc = zlib.crc32(payload, zlib.crc32(header))
  return header + _CRC.pack(crc) + payload


def unpack(data, expected_fingerprint=None):
  """bytes -> CodedImages; raises BitstreamError with a one-line reason."""
  reader = _Reader(bytes(data))
  if reader.take(len(MAGIC)) != MAGIC:
    raise BitstreamError("not a tfvaeclf file (bad magic)")
  (version,) = reader.unpack("B")
  if version not in _VERSIONS:
    raise BitstreamError(f"unsupported format version {version} (this "
                         f"reads {' and '.join(map(str, _VERSIONS))})")
  fingerprint = reader.take(FINGERPRINT_BYTES)
  image_shape = reader.unpack("3H")
  (rank,) = reader.unpack("B")
  latent_shape = reader.unpack(f"{rank}H")
  num_images, num_streams = reader.unpack("IB")
  (dither_seed,) = (reader.unpack("I") if version == FORMAT_VERSION
                    else (None,))
  header_end = reader.pos
  (crc,) = reader.unpack("I")
  if zlib.crc32(reader.data[reader.pos:],
                zlib.crc32(reader.data[:header_end])) != crc:
    raise BitstreamError("corrupted or truncated file (CRC32 mismatch)")
  if expected_fingerprint is not None and fingerprint != expected_fingerprint:
    raise BitstreamError(
        f"file was made by another model (fingerprint {fingerprint.hex()}, "
        f"this model is {expected_fingerprint.hex()})")
  strings = [[] for _ in range(num_streams)]
  for _ in range(num_images):
    for stream in strings:
      stream.append(reader.take(reader.leb128()))
  if reader.pos != len(reader.data):
    raise BitstreamError("trailing bytes after the payload")
  return CodedImages(fingerprint, tuple(image_shape), tuple(latent_shape),
                     strings, dither_seed)
