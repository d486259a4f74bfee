"""The file format: round trip, and every way a file can be bad."""

import random
import struct

import pytest

from tfvaeclf import bitstream

FINGERPRINT = bytes(range(8))


def _coded(num_images=3, num_streams=1, seed=0):
  rng = random.Random(seed)
  strings = [[bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
              for _ in range(num_images)] for _ in range(num_streams)]
  return bitstream.CodedImages(FINGERPRINT, (28, 28, 1), (4, 4), strings)


@pytest.mark.parametrize("num_images,num_streams", [(1, 1), (5, 1), (4, 2),
                                                    (0, 1)])
def test_round_trip(num_images, num_streams):
  coded = _coded(num_images, num_streams)
  assert bitstream.unpack(bitstream.pack(coded), FINGERPRINT) == coded


def test_long_strings_use_multibyte_lengths():
  coded = bitstream.CodedImages(FINGERPRINT, (32, 32, 3), (2, 3, 4),
                                [[b"\x01" * 200_000, b""]])
  assert bitstream.unpack(bitstream.pack(coded)) == coded


@pytest.mark.parametrize("num_streams,seed", [(1, 0), (2, 1), (2, 2)])
def test_file_size_is_the_size_of_a_one_image_file(num_streams, seed):
  coded = _coded(num_images=1, num_streams=num_streams, seed=seed)
  lengths = [len(stream[0]) for stream in coded.strings]
  assert bitstream.file_size(len(coded.latent_shape), lengths) == len(
      bitstream.pack(coded))


def test_header_is_small():
  data = bitstream.pack(_coded(num_images=1))
  payload = len(_coded(num_images=1).strings[0][0])
  # magic 4, version 1, fingerprint 8, shapes 6+1+4, count 4+1, crc 4.
  assert len(data) - payload - 2 <= 33


def test_every_truncation_is_refused():
  data = bitstream.pack(_coded(num_images=2))
  for cut in range(len(data)):
    with pytest.raises(bitstream.BitstreamError):
      bitstream.unpack(data[:cut])


def test_every_single_bit_flip_is_refused():
  data = bytearray(bitstream.pack(_coded(num_images=2)))
  for position in range(len(data)):
    flipped = bytearray(data)
    flipped[position] ^= 1 << (position % 8)
    with pytest.raises(bitstream.BitstreamError):
      bitstream.unpack(bytes(flipped), FINGERPRINT)


def test_garbage_and_other_files():
  for junk in (b"", b"\x89PNG\r\n\x1a\n" + bytes(100), bytes(1000),
               b"TFVC"):
    with pytest.raises(bitstream.BitstreamError):
      bitstream.unpack(junk)


def test_wrong_model_names_both_fingerprints():
  data = bitstream.pack(_coded())
  other = bytes(8)
  with pytest.raises(bitstream.BitstreamError, match="another model") as e:
    bitstream.unpack(data, other)
  assert FINGERPRINT.hex() in str(e.value) and other.hex() in str(e.value)


def test_future_version_is_refused():
  data = bytearray(bitstream.pack(_coded()))
  data[4] = bitstream.FORMAT_VERSION + 1
  with pytest.raises(bitstream.BitstreamError, match="version"):
    bitstream.unpack(bytes(data))


def test_trailing_bytes_are_refused_even_with_valid_crc():
  import zlib
  data = bitstream.pack(_coded(num_images=1))
  header_end = 4 + 1 + 8 + 6 + 1 + 4 + 4 + 1
  body = data[header_end + 4:] + b"\x00"
  crc = zlib.crc32(body, zlib.crc32(data[:header_end]))
  forged = data[:header_end] + struct.pack("<I", crc) + body
  with pytest.raises(bitstream.BitstreamError, match="trailing"):
    bitstream.unpack(forged)


def test_pack_checks_its_input():
  with pytest.raises(ValueError):
    bitstream.pack(bitstream.CodedImages(b"short", (1, 1, 1), (1,), [[b""]]))
  with pytest.raises(ValueError):
    bitstream.pack(bitstream.CodedImages(FINGERPRINT, (1, 1, 1), (1,),
                                         [[b""], [b"", b""]]))
