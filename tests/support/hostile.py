"""Hostile inputs that every decoder of outside bytes is checked against.

Raw mutations of real files (bit flips, truncations, splices, garbage),
payloads crafted as an attacker would (each image's strings replaced with
random bytes under a recomputed, valid CRC: the CRC is public), and the
escape attack that made TFC's range decoder loop for minutes.
`tests/test_decode_fuzz.py` and `tools/bench_decoder.py` share them.
"""

import dataclasses
import time

import numpy as np

from tfvaeclf import codec, errors
from tfvaeclf.coding import bitstream, range_coder

__all__ = ["SECONDS_PER_BYTE", "all_escapes", "crafted_payloads",
           "escape_attack", "fuzz", "raw_mutations"]

# What a decode may take per byte of input, beyond a fixed allowance.
SECONDS_PER_BYTE = 2e-6


def raw_mutations(rng, files, count):
  """Bit flips, truncations, splices of two files, garbage."""
  cases = []
  for i in range(count):
    data = bytearray(files[rng.integers(len(files))])
    kind = i % 5
    if kind == 0:
      for bit in rng.integers(0, 8 * len(data), size=rng.integers(1, 4)):
        data[bit // 8] ^= 1 << (bit % 8)
    elif kind == 1:
      del data[rng.integers(len(data)):]
    elif kind == 2:
      other = files[rng.integers(len(files))]
      data = data[:rng.integers(len(data))] + other[rng.integers(len(other)):]
    elif kind == 3:
      data = rng.bytes(int(rng.integers(0, 400)))
    else:  # a valid start, garbage after it
      data = data[:rng.integers(len(data))] + rng.bytes(
          int(rng.integers(1, 200)))
    cases.append(bytes(data))
  return cases


def crafted_payloads(rng, files, count):
  """Files with a valid header and CRC, each image's strings replaced with
  random bytes (of a stream chosen at random, or of all streams)."""
  cases = []
  for i in range(count):
    coded = bitstream.unpack(files[i % len(files)])
    streams = coded.strings
    replaced = (range(len(streams)) if i % 3 == 0
                else [int(rng.integers(len(streams)))])
    longest = 4000 if i % 50 == 0 else 40  # some long strings, too
    strings = [[rng.bytes(int(rng.integers(0, longest))) for _ in stream]
               if k in replaced else stream
               for k, stream in enumerate(streams)]
    cases.append(bitstream.pack(dataclasses.replace(coded, strings=strings)))
  return cases


def fuzz(decode, cases, base_seconds=float("inf"),
         seconds_per_byte=SECONDS_PER_BYTE):
  """Decodes every case; returns {outcome: count} and the longest decode
  (seconds, bytes), failing on an error that is not a user error or on a
  decode slower than its bound (tools/bench_decoder.py runs it too)."""
  outcomes, worst = {}, (0., 0)
  for data in cases:
    start = time.perf_counter()
    try:
      decode(data)
      outcome = "decoded"
    except errors.UserError as e:
      assert "\n" not in str(e)
      outcome = ("escape" if "escape code" in str(e) else
                 "corrupt" if "payload does not decode" in str(e) else
                 "refused")
    took = time.perf_counter() - start
    assert took < base_seconds + seconds_per_byte * len(data), (
        took, len(data))
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
    worst = max(worst, (took, len(data)))
  return outcomes, worst


def escape_attack(loaded, images):
  """A file of `images`' count whose strings open an escape code and then
  end, with a valid CRC: TFC's decoder reads the code's zeros past the end
  for minutes (the issue's random strings did this by chance). The model's
  coder must be factorized."""
  coded = bitstream.unpack(codec.compress_images(loaded, images))
  tables = loaded.model.coder.channel_tables
  assert tables.overflow[0]
  # The first value lands at the start of channel 0's escape bin.
  escape = int(tables.cdfs[0][tables.num_symbols[0] - 1])
  value = escape << (32 - int(tables.precision[0]))
  strings = [value.to_bytes(4, "big").rstrip(b"\0")] * coded.num_images
  try:  # the numpy reference refuses what TFC loops on
    range_coder.decode_channel(
        strings, tables, (*coded.latent_shape, tables.num_tables))
    raise AssertionError("the attack decoded")
  except ValueError as e:
    assert "escape code" in str(e), e
  return bitstream.pack(dataclasses.replace(coded, strings=[strings]))


def all_escapes(loaded, images, gamma):
  """A valid file of `images`' count whose every value escapes its table
  with Elias-gamma value `gamma`: the most work a byte can ask of a range
  decoder (short gammas the most values, long ones the most steps). The
  model's coder must be factorized."""
  coded = bitstream.unpack(codec.compress_images(loaded, images))
  tables = loaded.model.coder.channel_tables
  assert tables.overflow.all()
  n = int(np.prod(coded.latent_shape)) * tables.num_tables
  channel = np.arange(n) % tables.num_tables
  escape = tables.num_symbols[channel] - 1 + tables.offsets[channel]
  values = np.broadcast_to(escape + gamma - 1, (coded.num_images, n))
  strings = range_coder.encode_channel(values, tables)
  return bitstream.pack(dataclasses.replace(coded, strings=[strings]))
