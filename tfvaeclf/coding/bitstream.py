"""The wire format: a multi-image file, and a compact one-image message.

A file (for archives: any number of images, self-describing) and a message
(what a board sends for one image: the strings and a few bytes) hold the
same range-coded strings; a reader tells them apart by their first byte.

File layout (integers little-endian):

    magic        4 bytes  b"TFVC"
    version      u8       1, or 2 (FORMAT_VERSION) with a dither seed
    fingerprint  8 bytes  identifies the encoder side that coded the file
                          (`tfvaeclf.coding.codec_spec`)
    image_shape  3 x u16  H, W, C of the images that were coded
    latent_rank  u8, then latent_rank x u16: the spatial latent shape
    num_images   u32
    num_streams  u8       strings per image (1, or 2 with a hyper-latent)
    dither_seed  u32      version 2 only: the seed of the shared dither of
                          a universally quantized latent
                          (`tfvaeclf.coding.dither`)
    crc32        u32      of every byte of the file except these four
    payload      per image, per stream: LEB128 length, then the string

Version 1 (no dither) is what every other kind writes; readers take both.
Image i of a dithered file takes dither index i.

Message layout, version 1 (MESSAGE_VERSION):

    kind         u8       0x10 (version 1 << 4), | 0x01 if a counter follows;
                          never 0x54, the first byte of a file's magic
    counter      LEB128   dithered coders only: the message's dither index
                          (0 .. 2**32 - 1), which the sender increments
    lengths      LEB128   of each stream's string but the last
    strings      the streams' strings in order, the last one running up to
                 the CRC
    crc32        u32      of the codec fingerprint (8 bytes, not sent)
                          followed by every byte of the message before these 4

A message carries no shapes, seed or fingerprint: the receiver's
`CodecSpec` implies them, and the CRC, keyed by the fingerprint, refuses a
message for another encoder side as it refuses a corrupted one. Overhead
beyond the strings: 5 bytes for one stream, 6 with a counter below 128; each
further stream adds its length's LEB128 bytes.

Both are checked whole before anything is decoded, so a truncated,
corrupted or foreign input is refused with one line instead of yielding a
wrong label, with work bounded by its size.
`tfvaeclf.coding.codec_spec.CodecSpec` packs and unpacks both for a model or a
bundle, with the checks that the input fits it.
"""

import dataclasses
import struct
import zlib

from tfvaeclf.errors import BitstreamError

__all__ = ["BitstreamError", "CodedImages", "MAGIC", "FORMAT_VERSION",
           "MESSAGE_VERSION", "MAX_COUNTER", "MAX_IMAGES", "file_size",
           "is_file", "message_size", "pack", "pack_message", "unpack",
           "unpack_message"]

MAGIC = b"TFVC"
FORMAT_VERSION = 2  # the newest; it adds the dither seed to version 1
_VERSIONS = (1, FORMAT_VERSION)
FINGERPRINT_BYTES = 8
_CRC = struct.Struct("<I")
_SEED = struct.Struct("<I")
MESSAGE_VERSION = 1
_MESSAGE_KIND = MESSAGE_VERSION << 4
_HAS_COUNTER = 0x01
MAX_COUNTER = 2**32 - 1  # the dither hash takes 32 bits of the index
# Most images of one file that a reader decodes (the server's default
# --max_images, and `codec classify`): a file's bytes bound its parsing,
# not its decoding, whose work grows with its images.
MAX_IMAGES = 256


@dataclasses.dataclass(frozen=True)
class CodedImages:
  """What a file or message holds: per image, one bytes string per stream.

  Image i takes dither index `dither_index + i`: a file's first image 0, a
  message's its counter.
  """
  fingerprint: bytes
  image_shape: tuple
  latent_shape: tuple
  strings: list  # strings[stream][image] -> bytes
  dither_seed: int = None  # set for a dithered coder's latents only
  dither_index: int = 0

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
  """Bounds-checked cursor: running off the end (`end`, default the data's)
  means a truncated input (`noun`: "file" or "message")."""

  def __init__(self, data, noun="file", end=None):
    self.data, self.pos, self.noun = data, 0, noun
    self.end = len(data) if end is None else end

  def take(self, n):
    if self.pos + n > self.end:
      raise BitstreamError(f"truncated {self.noun}")
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
  if coded.dither_index:
    raise ValueError("a file's images take dither indexes from 0")
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


def unpack(data, expected_fingerprint=None, max_images=None):
  """bytes -> CodedImages; raises BitstreamError with a one-line reason,
  also for a file of more than `max_images` images (None: any number),
  before its strings are read."""
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
        f"file was made by another model's encoder (fingerprint "
        f"{fingerprint.hex()}, this model's is {expected_fingerprint.hex()})")
  if max_images is not None and num_images > max_images:
    raise BitstreamError(f"file holds {num_images} images, more than the "
                         f"{max_images} a file may hold here")
  strings = [[] for _ in range(num_streams)]
  for _ in range(num_images):
    for stream in strings:
      stream.append(reader.take(reader.leb128()))
  if reader.pos != len(reader.data):
    raise BitstreamError("trailing bytes after the payload")
  return CodedImages(fingerprint, tuple(image_shape), tuple(latent_shape),
                     strings, dither_seed)


def is_file(data):
  """Whether `data` starts as a file does (else it may be a message)."""
  return bytes(data[:len(MAGIC)]) == MAGIC


def _message_crc(fingerprint, body):
  return _CRC.pack(zlib.crc32(body, zlib.crc32(fingerprint)))


def pack_message(fingerprint, strings, counter=None):
  """One image's strings (one bytes per stream) -> the bytes of a message.

  `counter`: the message's dither index, for a dithered coder only.
  """
  if len(fingerprint) != FINGERPRINT_BYTES:
    raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes")
  if not strings:
    raise ValueError("a message needs at least one stream")
  if counter is not None and not 0 <= counter <= MAX_COUNTER:
    raise ValueError(f"message counter must be in [0, {MAX_COUNTER}], "
                     f"not {counter}")
  body = b"".join([
      bytes([_MESSAGE_KIND | (_HAS_COUNTER if counter is not None else 0)]),
      b"" if counter is None else _leb128(counter),
      *(_leb128(len(s)) for s in strings[:-1]), *strings])
  return body + _message_crc(fingerprint, body)


def message_size(string_lengths, counter=None):
  """Bytes of the message `pack_message` writes for strings of these
  lengths (and this counter)."""
  return (1 + _CRC.size + sum(string_lengths) +
          (0 if counter is None else len(_leb128(counter))) +
          sum(len(_leb128(n)) for n in string_lengths[:-1]))


def unpack_message(data, fingerprint, num_streams):
  """A message's bytes -> (strings, one per stream; counter or None).

  `fingerprint` and `num_streams` are the receiver's (its `CodecSpec`'s):
  a message for another encoder side fails the CRC. Raises BitstreamError
  with a one-line reason.
  """
  data = bytes(data)
  if not data:
    raise BitstreamError("empty input: neither a tfvaeclf file nor a message")
  if data[0] & ~_HAS_COUNTER != _MESSAGE_KIND:
    raise BitstreamError(
        f"not a tfvaeclf file or version-{MESSAGE_VERSION} message (first "
        f"byte 0x{data[0]:02x})")
  if len(data) < 1 + _CRC.size:
    raise BitstreamError("truncated message")
  if _message_crc(fingerprint, data[:-_CRC.size]) != data[-_CRC.size:]:
    raise BitstreamError(
        "corrupted or truncated message, or one for another model (CRC32 "
        "mismatch)")
  reader = _Reader(data, "message", end=len(data) - _CRC.size)
  reader.take(1)
  counter = reader.leb128() if data[0] & _HAS_COUNTER else None
  if counter is not None and counter > MAX_COUNTER:
    raise BitstreamError(f"message counter {counter} is out of range")
  lengths = [reader.leb128() for _ in range(num_streams - 1)]
  strings = [reader.take(n) for n in lengths]
  strings.append(reader.take(reader.end - reader.pos))
  return strings, counter
