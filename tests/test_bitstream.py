"""The wire format: round trips, and every way a file or message can be bad."""

import random
import struct
import zlib

import pytest

from tfvaeclf.coding import bitstream

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


# -- messages ----------------------------------------------------------------

def _message_strings(num_streams, seed=0):
  rng = random.Random(seed)
  return [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300)))
          for _ in range(num_streams)]


@pytest.mark.parametrize("num_streams,counter", [
    (1, None), (1, 0), (1, 127), (1, 128), (2, None), (2, 2**32 - 1),
    (3, 5)])
def test_message_round_trip_and_size(num_streams, counter):
  strings = _message_strings(num_streams, seed=num_streams)
  data = bitstream.pack_message(FINGERPRINT, strings, counter)
  assert bitstream.unpack_message(data, FINGERPRINT, num_streams) == (
      strings, counter)
  assert len(data) == bitstream.message_size([len(s) for s in strings],
                                             counter)
  assert not bitstream.is_file(data)


@pytest.mark.parametrize("counter,overhead", [(None, 5), (0, 6), (127, 6),
                                              (128, 7)])
def test_one_stream_message_overhead(counter, overhead):
  string = _message_strings(1)[0]
  data = bitstream.pack_message(FINGERPRINT, [string], counter)
  assert len(data) - len(string) == overhead
  # A kind byte, whose value no file starts with, and the CRC at the end.
  assert data[0] in (0x10, 0x11) and data[0] != bitstream.MAGIC[0]
  assert data[-4:] == struct.pack(
      "<I", zlib.crc32(data[:-4], zlib.crc32(FINGERPRINT)))


def test_empty_strings_are_messages_too():
  data = bitstream.pack_message(FINGERPRINT, [b"", b""])
  assert bitstream.unpack_message(data, FINGERPRINT, 2) == ([b"", b""], None)


def _message(counter=3):
  return bitstream.pack_message(FINGERPRINT, _message_strings(2, seed=9),
                                counter)


def test_every_message_truncation_is_refused():
  data = _message()
  for cut in range(len(data)):
    with pytest.raises(bitstream.BitstreamError):
      bitstream.unpack_message(data[:cut], FINGERPRINT, 2)


def test_every_message_bit_flip_is_refused():
  data = _message()
  for position in range(8 * len(data)):
    flipped = bytearray(data)
    flipped[position // 8] ^= 1 << (position % 8)
    with pytest.raises(bitstream.BitstreamError) as e:
      bitstream.unpack_message(bytes(flipped), FINGERPRINT, 2)
    assert "\n" not in str(e.value)


def test_spliced_and_concatenated_messages_are_refused():
  one, two = _message(1), _message(2)
  for forged in (one + two, one[:len(one) // 2] + two[len(two) // 2:],
                 one[:-4] + two[-4:], one + b"\x00"):
    with pytest.raises(bitstream.BitstreamError, match="CRC32"):
      bitstream.unpack_message(forged, FINGERPRINT, 2)


def test_message_for_another_model_fails_its_crc():
  data = _message()
  with pytest.raises(bitstream.BitstreamError, match="another model"):
    bitstream.unpack_message(data, bytes(8), 2)


def test_garbage_is_not_a_message():
  for junk, reason in ((b"", "empty"), (b"\x10", "truncated"),
                       (b"\x89PNG\r\n\x1a\n" + bytes(100), "first byte"),
                       (bytes(1000), "first byte"), (b"TFVC", "first byte"),
                       (b"\x20" + bytes(20), "version-1 message")):
    with pytest.raises(bitstream.BitstreamError, match=reason):
      bitstream.unpack_message(junk, FINGERPRINT, 1)


def test_a_crc_valid_crafted_message_is_still_bounded():
  """The CRC is public: lengths past the end, an overlong counter or LEB128
  field are refused with the CRC recomputed."""
  def forged(body):
    return body + struct.pack("<I", zlib.crc32(body, zlib.crc32(FINGERPRINT)))
  for body, reason in ((b"\x10\xff\xff\xff\x7f", "truncated"),
                       (b"\x11" + b"\xff" * 6 + b"\x01", "corrupted length"),
                       (b"\x11\x80\x80\x80\x80\x10", "counter"),
                       (b"\x11", "truncated")):
    with pytest.raises(bitstream.BitstreamError, match=reason):
      bitstream.unpack_message(forged(body), FINGERPRINT, 2)


def test_files_and_messages_are_told_apart():
  assert bitstream.is_file(bitstream.pack(_coded()))
  assert not bitstream.is_file(_message())
  assert not bitstream.is_file(b"TFV")


def test_pack_message_checks_its_input():
  for args in ((b"short", [b""]), (FINGERPRINT, []),
               (FINGERPRINT, [b""], -1), (FINGERPRINT, [b""], 2**32)):
    with pytest.raises(ValueError):
      bitstream.pack_message(*args)
  with pytest.raises(ValueError, match="dither indexes"):
    bitstream.pack(bitstream.CodedImages(FINGERPRINT, (1, 1, 1), (1,),
                                         [[b""]], 0, dither_index=4))


def test_more_images_than_taken_is_refused_before_the_strings():
  data = bitstream.pack(_coded(num_images=5))
  assert bitstream.unpack(data, max_images=5).num_images == 5
  with pytest.raises(bitstream.BitstreamError,
                     match="holds 5 images, more than the 4") as e:
    bitstream.unpack(data, max_images=4)
  assert "\n" not in str(e.value)
  # Refused from the header: a count its bytes cannot hold is not read.
  header = 4 + 1 + 8 + 6 + 1 + 4
  claims = bytearray(data)
  claims[header:header + 4] = struct.pack("<I", 2 ** 32 - 1)
  crc = zlib.crc32(bytes(claims[header + 5 + 4:]),
                   zlib.crc32(bytes(claims[:header + 5])))
  claims[header + 5:header + 9] = struct.pack("<I", crc)
  with pytest.raises(bitstream.BitstreamError, match="4294967295 images"):
    bitstream.unpack(bytes(claims), max_images=bitstream.MAX_IMAGES)
