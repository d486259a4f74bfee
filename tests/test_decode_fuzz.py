"""Fuzzing every decode of bytes from outside: bounded time, user errors only.

Files of three coders (factorized, channel context, dithered) are mutated
raw (bit flips, truncation, splices, garbage) and crafted the way an
attacker would: each image's strings replaced with random bytes under a
recomputed, valid CRC. Such payloads made TFC's range decoder run for
minutes (issue 14); the project's decoder must finish each file within a
bound proportional to its size, and raise nothing but one-line user errors.
Deterministic seeds; a few thousand cases.
"""

import dataclasses
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import train_small_joint
from tfvaeclf import bitstream, codec, codec_spec, entropy, errors
from tfvaeclf.edge import range_coder

# Seconds a decode may take: a generous multiple of what it takes (about
# 3 ms for a 16-image MNIST file, 20 ms with the context coder's eager
# slice loop) on a loaded 2-core machine, plus a per-byte share.
BASE_SECONDS = {"factorized": .25, "context": .5, "dithered": .25}
SECONDS_PER_BYTE = 2e-6


@pytest.fixture(scope="module")
def digits(mnist):
  images, _ = next(iter(mnist.test.batch(16)))
  return images.numpy()


@pytest.fixture(scope="module")
def context(mnist, tmp_path_factory):
  from tfvaeclf import model_dir
  return model_dir.load(train_small_joint(
      tmp_path_factory.mktemp("context"), mnist, 500,
      entropy_model="context"))


@pytest.fixture(scope="module")
def dithered():
  """A dithered coder and the spec of its files: what decoding needs of an
  rdc model dir (whose training would take longer than this whole test)."""
  coder = entropy.DitheredCoder((1, 1, 8), 4, seed=3)
  latent = tf.random.stateless_uniform((256, 1, 1, 8), (0, 1), 0., 3.)
  coder(latent, training=True)
  coder.freeze()
  spec = codec_spec.CodecSpec(
      fingerprint=bytes(range(8)), image_shape=(28, 28, 1),
      latent_shape=(1, 1), stream_names=("latent",), dither_seed=3)
  loaded = types.SimpleNamespace(codec=spec,
                                 model=types.SimpleNamespace(coder=coder))
  files = [spec.pack([s.numpy() for s in coder.compress(latent[:n])])
           for n in (1, 16)]
  return loaded, files


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


def fuzz(decode, cases, base_seconds=float("inf")):
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
    assert took < base_seconds + SECONDS_PER_BYTE * len(data), (
        took, len(data))
    outcomes[outcome] = outcomes.get(outcome, 0) + 1
    worst = max(worst, (took, len(data)))
  return outcomes, worst


# Cases per coder: (raw mutations, crafted payloads). Most raw ones stop at
# the CRC; the crafted ones all reach the range decoder.
CASES = {"factorized": (1500, 1500), "context": (600, 250),
         "dithered": (1000, 1000)}


@pytest.mark.parametrize("kind", ["factorized", "context", "dithered"])
def test_fuzzed_files_decode_in_bounded_time_or_fail_in_one_line(
    kind, request, digits):
  if kind == "dithered":
    loaded, files = request.getfixturevalue("dithered")
  else:
    loaded = request.getfixturevalue(
        "loaded" if kind == "factorized" else "context")
    files = [codec.compress_images(loaded, digits[:n]) for n in (1, 16)]
  decode = lambda data: codec.decode_latent(loaded, data)
  for data in files:
    decode(data)  # valid, and every lazy initialization done
  rng = np.random.default_rng(14)
  raw_count, crafted_count = CASES[kind]
  raw, _ = fuzz(decode, raw_mutations(rng, files, raw_count),
                BASE_SECONDS[kind])
  crafted, _ = fuzz(decode, crafted_payloads(rng, files, crafted_count),
                    BASE_SECONDS[kind])
  assert raw["refused"] > raw_count * .8, raw  # mostly by the CRC
  # Crafted payloads pass every check but the range decoder's own: some
  # decode to something (a range decoder reads most bytes), the others
  # fail there.
  assert crafted.get("refused", 0) == 0, crafted
  assert crafted["decoded"] > 0 and crafted["corrupt"] > 0, crafted


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
  with pytest.raises(ValueError, match="escape code"):  # TFC's endless loop
    range_coder.decode_channel(
        strings, tables, (*coded.latent_shape, tables.num_tables))
  return bitstream.pack(dataclasses.replace(coded, strings=[strings]))


def test_the_issues_attack_finishes_fast(loaded, digits):
  data = escape_attack(loaded, digits)  # 16 images
  start = time.perf_counter()
  with pytest.raises(errors.BitstreamError, match="payload does not decode"):
    codec.classify_file(loaded, data)
  assert time.perf_counter() - start < BASE_SECONDS["factorized"]
