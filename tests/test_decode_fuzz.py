"""Fuzzing every decode of bytes from outside: bounded time, user errors only.

Files of three coders (factorized, channel context, dithered) are mutated
raw (bit flips, truncation, splices, garbage) and crafted the way an
attacker would: each image's strings replaced with random bytes under a
recomputed, valid CRC. So are the files and messages a bundle's server
(`BundleServer`) decodes for hyperprior and context models,
whose slice loop runs the SavedModel's sub-models on whatever the hostile
hyper-latent decodes to. Such payloads made TFC's range decoder run for
minutes; the project's decoder must finish each file within a
bound proportional to its size, and raise nothing but one-line user errors.
Deterministic seeds; a few thousand cases.
"""

import time
import types

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import codec, coders, errors, export
from tfvaeclf.coding import codec_spec, native, streams
from tfvaeclf.serve.bundle_server import BundleServer
from tfvaeclf.serve.core import Core, Refusal
from tests.support.hostile import (all_escapes, crafted_payloads,
                                   escape_attack, fuzz, raw_mutations)

from tests.conftest import train_small_joint

# Seconds a decode may take: a generous multiple of what it takes (about
# 3 ms for a 16-image MNIST file, 20 ms with the context coder's eager
# slice loop) on a loaded 2-core machine, plus a per-byte share
# (`hostile.SECONDS_PER_BYTE`).
BASE_SECONDS = {"factorized": .25, "context": .5, "dithered": .25}
# A bundle server's decode runs the SavedModel's signatures (hyper-synthesis,
# then each slice's): about 10 ms a file.
SERVER_SECONDS = 1.


@pytest.fixture(scope="module")
def digits(mnist):
  images, _ = next(iter(mnist.test.batch(16)))
  return images.numpy()


def _conditional(mnist, tmp_path_factory, coder):
  from tfvaeclf import model_dir
  return model_dir.load(train_small_joint(
      tmp_path_factory.mktemp(coder), mnist, 500, entropy_model=coder))


@pytest.fixture(scope="module")
def context(mnist, tmp_path_factory):
  return _conditional(mnist, tmp_path_factory, "context")


@pytest.fixture(scope="module")
def hyperprior(mnist, tmp_path_factory):
  return _conditional(mnist, tmp_path_factory, "hyperprior")


def crafted_messages(rng, spec, messages, count):
  """One-image messages with a valid CRC around random strings: of every
  stream, or of one, the others real."""
  cases = []
  for i in range(count):
    strings = spec.read(messages[i % len(messages)]).strings
    replaced = (range(len(strings)) if i % 3 == 0
                else [int(rng.integers(len(strings)))])
    cases.append(spec.pack_messages([
        [rng.bytes(int(rng.integers(0, 40)))] if k in replaced else stream
        for k, stream in enumerate(strings)])[0])
  return cases


@pytest.fixture(scope="module")
def dithered():
  """A dithered coder and the spec of its files: what decoding needs of an
  rdc model dir (whose training would take longer than this whole test)."""
  coder = coders.DitheredCoder((1, 1, 8), 4, seed=3)
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


# Cases per coder: (raw mutations, crafted payloads). Most raw ones stop at
# the CRC; the crafted ones all reach the range decoder.
CASES = {"factorized": (1500, 1500), "context": (600, 250),
         "dithered": (1000, 1000)}


@pytest.mark.parametrize("kind", ["factorized", "context", "dithered"])
@pytest.mark.slow
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


def test_the_issues_attack_finishes_fast(loaded, digits):
  data = escape_attack(loaded, digits)  # 16 images
  start = time.perf_counter()
  with pytest.raises(errors.BitstreamError, match="payload does not decode"):
    codec.classify_file(loaded, data)
  assert time.perf_counter() - start < BASE_SECONDS["factorized"]


@pytest.mark.parametrize("gamma", [1, 2 ** 30 - 1])
def test_the_numpy_decoder_is_bounded_on_escapes_alone(loaded, digits,
                                                       monkeypatch, gamma):
  """Without the C coder: 16-image files whose every value escapes decode
  (or are refused in one line) within the bound of every other file. Wall
  time on a loaded machine: the work itself is counted in
  tests/test_edge_range_coder.py."""
  monkeypatch.setattr(native, "_lib", None)  # as without a compiler
  assert not native.available()
  fuzz(lambda data: codec.decode_latent(loaded, data),
       [all_escapes(loaded, digits, gamma)], BASE_SECONDS["factorized"])


def test_fuzzed_messages_decode_in_bounded_time_or_fail_in_one_line(
    loaded, digits):
  """One-image messages, mutated raw and crafted with a valid CRC around
  random strings: the same bound and the same one-line errors as files."""
  messages = codec.compress_messages(loaded, digits)
  decode = lambda data: codec.decode_latent(loaded, data)
  rng = np.random.default_rng(15)
  raw, _ = fuzz(decode, raw_mutations(rng, messages, 1000),
                BASE_SECONDS["factorized"])
  crafted, _ = fuzz(decode, crafted_messages(rng, loaded.codec, messages,
                                             1000),
                    BASE_SECONDS["factorized"])
  assert raw["refused"] > 800, raw  # by the CRC
  assert crafted.get("refused", 0) == 0, crafted  # all reach the decoder
  assert crafted.get("corrupt", 0) > 0, crafted


@pytest.mark.parametrize("coder", ["hyperprior", "context"])
@pytest.mark.slow
def test_server_of_a_conditional_bundle_decodes_fuzz_in_bounded_time(
    coder, request, digits, tmp_path):
  """Files and messages, raw and crafted, one by one and batched as the
  serving core batches messages: each decode within its bound, only
  one-line user errors, a batch's bad messages failing alone."""
  loaded = request.getfixturevalue(coder)
  out = str(tmp_path / "bundle")
  export.export_bundle(loaded, out,
                       export.calibration_images(loaded.config, 10))
  served = BundleServer(out, loaded.fingerprint)
  files = [codec.compress_images(loaded, digits[:n]) for n in (1, 16)]
  messages = codec.compress_messages(loaded, digits[:4])
  for data in files + messages:  # valid, and every lazy initialization done
    np.testing.assert_array_equal(served.decode(data),
                                  codec.decode_latent(loaded, data))
  rng = np.random.default_rng(16)
  raw, _ = fuzz(served.decode, raw_mutations(rng, files + messages, 400),
                SERVER_SECONDS)
  crafted, _ = fuzz(served.decode, crafted_payloads(rng, files, 150),
                    SERVER_SECONDS)
  hostile = crafted_messages(rng, loaded.codec, messages, 160)
  crafted_one, _ = fuzz(served.decode, hostile, SERVER_SECONDS)
  assert raw["refused"] > 300, raw  # mostly by the CRC
  for outcomes in (crafted, crafted_one):
    assert outcomes.get("refused", 0) == 0, outcomes  # all reach the decoder
    assert outcomes["decoded"] > 0 and outcomes["corrupt"] > 0, outcomes
  decode_many = lambda batch: served.decode_many(
      [served.codec.read(m) for m in batch])
  for start in range(0, len(hostile), 8):
    batch = hostile[start:start + 8]
    begin = time.perf_counter()
    decoded = decode_many(batch)
    assert time.perf_counter() - begin < SERVER_SECONDS * len(batch)
    for message, result in zip(batch, decoded):
      if isinstance(result, errors.BitstreamError):
        assert "\n" not in str(result)
      else:
        np.testing.assert_array_equal(result, served.decode(message))


@pytest.mark.parametrize("coder", ["loaded", "context"])
def test_a_batchs_undecodable_payloads_fail_alone_in_one_decode(
    coder, request, digits, tmp_path, monkeypatch):
  """A batch of 64 messages as the serving core batches them, one of which
  fails the range decoder under a valid CRC (bytes after its last string's
  end; for the factorized coder, the escape attack too): the batch is
  decoded in one call, the bad payloads are refused
  with the reason each gets alone, and the others classify exactly as
  alone."""
  loaded = request.getfixturevalue(coder)  # factorized, channel context
  out = str(tmp_path / "bundle")
  export.export_bundle(loaded, out,
                       export.calibration_images(loaded.config, 10))
  core = Core(out)
  messages = codec.compress_messages(loaded, np.tile(digits, (4, 1, 1, 1)))
  strings = loaded.codec.read(messages[17]).strings
  messages[17] = loaded.codec.pack_messages(
      [*strings[:-1], [strings[-1][0] + bytes(range(1, 17))]])[0]
  bad = [17]
  if coder == "loaded":
    messages[40] = escape_attack(loaded, digits[:1])
    bad.append(40)
  alone = [core.classify_batch([message])[0] for message in messages]
  calls, decode_input = [], streams.decode_input

  def counted(plan, strings, *args):
    calls.append(len(strings[0]))  # images decoded in the call
    return decode_input(plan, strings, *args)

  monkeypatch.setattr(streams, "decode_input", counted)
  batch = core.classify_batch(messages)
  assert calls == [len(messages)]
  for i in bad:
    assert isinstance(batch[i], Refusal), i
    assert batch[i] == alone[i]
    assert "payload does not decode: the latent string of image 0" in (
        batch[i].message)
  good = [i for i in range(len(messages)) if i not in bad]
  assert [batch[i]["classes"] for i in good] == [
      alone[i]["classes"] for i in good]
  served = BundleServer(out)
  for i in good[::8]:
    np.testing.assert_array_equal(
        served.decode_many([served.codec.read(messages[i])])[0],
        served.decode(messages[i]))
