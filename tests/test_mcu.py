"""The microcontroller bundle (`export --mcu`): its C coder, built by the
host's gcc, writes the Python edge's messages byte for byte; the int8
encoder runs under TFLM (the `tflite-micro` package) with the exported op
list and arena, and the server classifies what the two make of real
digits as the Keras model does."""

import os
import re
import shutil
import subprocess

from absl.testing import flagsaver
import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf import cli, codec, data, model_dir
from tfvaeclf.coding import bundle, dither, range_coder, streams
from tfvaeclf.edge import EdgeEncoder, encoder as edge_encoder
from tfvaeclf.serve.bundle_server import BundleServer

from tfvaeclf import export
from tfvaeclf.export import __main__ as export_main
from tfvaeclf.export import mcu
from tests.support import mcu_host
from tests.support.mcu_host import (CFLAGS, c_conditional_messages,
                                    c_integer_messages, c_messages,
                                    edge_conditional_messages,
                                    fixed_conditional_header,
                                    fixed_integer_header,
                                    fixed_latents_header, int8_model,
                                    litert_conditional, litert_outputs,
                                    read_manifest, server_classes,
                                    tflm_outputs, tflm_slice_coder)
from tests.conftest import REPO, train_small_joint, train_small_rdc

NUM_IMAGES = 300


def export_mcu(loaded, directory):
  out = str(directory / "bundle")
  export.export_bundle(loaded, out,
                       export.calibration_images(loaded.config, 100),
                       with_mcu=True)
  return out


def build_harness(bundle_dir):
  program = os.path.join(os.path.dirname(bundle_dir), "harness")
  mcu_host.build_harness(bundle_dir, program)
  return program


def python_messages(bundle_dir, latents, first_counter=0):
  """What the Python edge sends for int8 encoder outputs `latents`."""
  # pylint: disable=protected-access
  encoder = EdgeEncoder(bundle_dir, int8=True)
  (stream,) = encoder.manifest["streams"]
  output = encoder.manifest["edge"]["encoders"][bundle.ENCODER_INT8][
      "outputs"][stream["name"]]["quantization"]
  dequantize = edge_encoder._dequantization({
      "dtype": np.int8, "quantization_parameters": {
          "scales": [output["scale"]],
          "zero_points": [output["zero_point"]]}})
  (channel_stream,) = streams.read_plan(bundle_dir, encoder.manifest)
  values = channel_stream.quantize(dequantize(latents), first_counter)
  counter = first_counter if "dither" in stream else None
  return encoder.codec.pack_messages(encoder.code({stream["name"]: values}),
                                     counter)


def cli_export_mcu(directory, out):
  """`python -m export --mcu` of the model dir `directory` into `out`."""
  with flagsaver.flagsaver():
    with pytest.raises(SystemExit) as exit_info:
      cli.run(export_main.main, argv=[
          "export", f"--model_dir={directory}", f"--out={out}",
          "--calibration_examples=100", "--mcu"])
  assert exit_info.value.code is None
  return out


@pytest.fixture(scope="module")
def mcu_bundle(trained_dir, tmp_path_factory):
  """The session's small model, exported through the CLI with --mcu."""
  return cli_export_mcu(trained_dir,
                        str(tmp_path_factory.mktemp("mcu") / "bundle"))


@pytest.fixture(scope="module", params=("hyperprior", "context"))
def conditional(request, mnist, tmp_path_factory):
  """A small joint model with a conditional coder, trained for one epoch on
  2000 real digits, exported through the CLI with --mcu; its harness."""
  directory = tmp_path_factory.mktemp(request.param)
  run = train_small_joint(directory / "run", mnist, 2000, lmbda=1.0,
                          entropy_model=request.param)
  out = cli_export_mcu(run, str(directory / "bundle"))
  return out, build_harness(out)


@pytest.fixture(scope="module")
def harness(mcu_bundle):
  return build_harness(mcu_bundle)


@pytest.fixture(scope="module")
def test_digits(mnist):
  images, labels = next(iter(mnist.test.batch(NUM_IMAGES)))
  return images.numpy(), labels.numpy()


@pytest.mark.slow
def test_bundle_lists_the_model_ops_and_measured_arena(mcu_bundle):
  manifest = read_manifest(mcu_bundle)
  figures = manifest["mcu"]
  files = {"model_data.c", "model_data.h", "tfvaeclf_model.c",
           "tfvaeclf_model.h", "range_coder.c", "range_coder.h",
           "tfvaeclf_message.c", "tfvaeclf_message.h", "main.cc",
           "tfvaeclf.mk", "README.md"}
  assert {f"mcu/{name}" for name in files} <= set(manifest["files"])
  with open(int8_model(mcu_bundle), "rb") as f:
    model = f.read()
  assert figures["ops"] == mcu.model_ops(model)
  assert figures["model_bytes"] == len(model)
  with open(os.path.join(mcu_bundle, "mcu", "main.cc")) as f:
    main = f.read()
  assert f"MicroMutableOpResolver<{len(figures['ops'])}>" in main
  for op in figures["ops"]:
    assert f"resolver.{mcu._op_method(op)}()" in main
  with open(os.path.join(mcu_bundle, "mcu", "tfvaeclf_model.h")) as f:
    header = f.read()
  assert f"#define TFVAECLF_ARENA_BYTES {figures['arena_bytes']}\n" in header
  # The arena is the smallest that runs (to 16 bytes).
  # pylint: disable=protected-access
  assert mcu._runs(model, figures["arena_bytes"])
  assert not mcu._runs(model, figures["arena_bytes"] - 16)


@pytest.mark.parametrize("op, method", [
    ("CONV_2D", "AddConv2D"), ("DEPTHWISE_CONV_2D", "AddDepthwiseConv2D"),
    ("FULLY_CONNECTED", "AddFullyConnected"), ("SPLIT_V", "AddSplitV"),
    ("L2_NORMALIZATION", "AddL2Normalization"),
    ("TRANSPOSE_CONV", "AddTransposeConv"),
    # TFLM spells these four otherwise than the rule would.
    ("BATCH_MATMUL", "AddBatchMatMul"), ("CUMSUM", "AddCumSum"),
    ("PADV2", "AddPadV2"),
    ("UNIDIRECTIONAL_SEQUENCE_LSTM", "AddUnidirectionalSequenceLSTM")])
def test_main_calls_tflms_resolver_methods_by_their_names(op, method):
  """The names of micro_mutable_op_resolver.h: a wrong one would make the
  board's main.cc fail to compile."""
  assert mcu._op_method(op) == method  # pylint: disable=protected-access


@pytest.mark.slow
def test_c_messages_are_the_python_edges(mcu_bundle, harness, test_digits):
  """Real digits: the C coder on LiteRT's int8 outputs writes exactly the
  messages of `EdgeEncoder(int8=True).encode_messages`."""
  images = test_digits[0][:100]
  _, latents = litert_outputs(mcu_bundle, images)
  assert c_messages(harness, latents) == EdgeEncoder(
      mcu_bundle, int8=True).encode_messages(images)


@pytest.mark.slow
def test_extreme_outputs_fit_the_stated_worst_case(mcu_bundle, harness):
  """Every int8 output, escapes included, codes as Python's, within
  TFVAECLF_MAX_MESSAGE_BYTES."""
  shape = read_manifest(mcu_bundle)["streams"][0]["shape"]
  rng = np.random.default_rng(0)
  latents = np.concatenate([
      np.full((1, *shape), -128), np.full((1, *shape), 127),
      rng.integers(-128, 128, (20, *shape))]).astype(np.int8)
  messages = c_messages(harness, latents)
  assert messages == python_messages(mcu_bundle, latents)
  worst = read_manifest(mcu_bundle)["mcu"]["max_message_bytes"]
  assert max(map(len, messages)) <= worst


@pytest.mark.slow
def test_tflm_messages_classify_as_keras(loaded, mcu_bundle, harness,
                                         test_digits):
  """TFLM's int8 outputs, coded by the C coder, classify as LiteRT's do
  (TFLM and LiteRT differ by 1 LSB at most), and as accurately as the
  Keras model within 1.5 points: the int8 quantization of a model trained
  one epoch, which moves with the weights the session's test order
  leaves it (1 point seen)."""
  images, labels = test_digits
  pixels, litert = litert_outputs(mcu_bundle, images)
  tflm = tflm_outputs(mcu_bundle, pixels)
  messages = c_messages(harness, tflm)
  classes = server_classes(mcu_bundle, messages)
  keras = tf.argmax(loaded.model(data.to_float(images), training=False)[
      "logits"], -1).numpy()
  litert_classes = server_classes(mcu_bundle, c_messages(harness, litert))
  differ = np.mean(tflm != litert)
  print(f"TFLM vs LiteRT int8 outputs: {differ:.4%} of elements differ "
        f"(max {np.abs(tflm.astype(int) - litert).max()} LSB); classes "
        f"differ on {np.sum(classes != litert_classes)} of {len(images)}")
  assert np.abs(tflm.astype(int) - litert).max() <= 1
  assert np.mean(classes == litert_classes) >= .99
  assert abs(np.mean(classes == labels) - np.mean(keras == labels)) <= .015


def test_dither_tables_match_float_arithmetic():
  """value + (k >= step1) + (k >= step2) is the edge's float32 rounding of
  the dequantized output plus the dither, for every output and sampled
  hashes (the ends of the hash range included)."""
  rng = np.random.default_rng(0)
  for scale, zero_point in ((.0371, -3), (.5, 0), (.25, 7), (1.3, 2)):
    value, step1, step2 = mcu.symbol_tables(scale, zero_point, 16)
    q = np.arange(256)
    for k in [np.zeros(256, np.int64), np.full(256, 2**24 - 1),
              *rng.integers(0, 2**24, (200, 256))]:
      latent = (q.astype(np.float32) - 128 - np.float32(zero_point)) * \
          np.float32(scale)
      u = k.astype(np.float32) * np.float32(2.**-24) - np.float32(.5)
      expected = range_coder.quantize(latent + u)
      np.testing.assert_array_equal(
          value + (k >= step1) + (k >= step2), expected)


@pytest.mark.slow
def test_dithered_messages_and_counters(mnist, classifier_dir,
                                        tmp_path_factory, test_digits):
  """A dithered rdc model's C messages are the Python edge's, counters of
  1 to 5 LEB128 bytes included."""
  directory = tmp_path_factory.mktemp("mcu_rdc")
  rdc = model_dir.load(train_small_rdc(directory / "run", mnist,
                                       classifier_dir, lambda_cls=.01,
                                       seed=0))
  bundle_dir = export_mcu(rdc, directory)
  program = build_harness(bundle_dir)
  images = test_digits[0][:50]
  _, latents = litert_outputs(bundle_dir, images)
  for first in (0, 5, dither.MAX_SEED - 49):  # 1- to 5-byte counters
    assert c_messages(program, latents, first) == EdgeEncoder(
        bundle_dir, int8=True).encode_messages(images, first)


@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and
                         shutil.which("qemu-system-arm")),
                    reason="no arm-none-eabi-gcc or qemu-system-arm: run "
                    "tools/setup.sh")
@pytest.mark.slow
def test_cortex_m4_under_qemu_writes_the_hosts_bytes(mcu_bundle, tmp_path):
  """The coder built for Cortex-M4 (thumb, -Os) and run on QEMU's
  mps2-an386 codes fixed latents, escapes included, into the host's
  bytes, which are the Python edge's."""
  shape = read_manifest(mcu_bundle)["streams"][0]["shape"]
  rng = np.random.default_rng(1)
  latents = np.concatenate([np.full((1, *shape), 127),
                            rng.integers(-128, 128, (3, *shape)),
                            rng.integers(-4, 5, (4, *shape))]).astype(np.int8)
  header = tmp_path / "fixed_latents.h"
  header.write_text(fixed_latents_header(latents, range(len(latents))))
  source = os.path.join(mcu_bundle, mcu.MCU_DIR)
  host = str(tmp_path / "fixed")
  subprocess.run(["gcc", *CFLAGS, f"-I{source}", f"-I{tmp_path}",
                  os.path.join(REPO, "tools", "mcu", "fixed.c"),
                  *[os.path.join(source, f"{name}.c") for name in
                    ("range_coder", "tfvaeclf_message", "tfvaeclf_model")],
                  "-o", host], check=True)
  on_host = subprocess.run([host], capture_output=True, text=True,
                           check=True).stdout
  on_m4 = subprocess.run(
      [os.path.join(REPO, "tools", "mcu", "qemu.sh"), source, str(header),
       str(tmp_path / "arm")], capture_output=True, text=True, check=True)
  assert on_m4.stdout == on_host
  assert [bytes.fromhex(line) for line in on_host.split()] == \
      python_messages(mcu_bundle, latents)
  print((tmp_path / "arm" / "size.txt").read_text())


@pytest.mark.slow
def test_conditional_bundle_runs_both_models_with_builtin_ops(conditional):
  """The int8 encoder and the float32 slice coder: one resolver with the
  ops of both, all TFLM built-ins, each model's measured arena."""
  bundle_dir, _ = conditional
  figures = read_manifest(bundle_dir)["mcu"]
  files = {"model_data.c", "slice_coder_data.c", "slice_coder_data.h",
           mcu.SLICE_CODER}
  assert {f"mcu/{name}" for name in files} <= set(
      read_manifest(bundle_dir)["files"])
  with open(int8_model(bundle_dir), "rb") as f:
    encoder = f.read()
  with open(os.path.join(bundle_dir, mcu.MCU_DIR, mcu.SLICE_CODER),
            "rb") as f:
    slice_coder = f.read()
  assert figures["ops"] == mcu.model_ops(encoder, slice_coder)
  # Built-ins by name (a custom or Flex op shows its own), and TFLM's
  # interpreter, whose resolver holds only built-ins, runs both below.
  for op in figures["ops"]:
    assert op.isupper() and not op.startswith(("CUSTOM", "FLEX")), op
  with open(os.path.join(bundle_dir, mcu.MCU_DIR, "main.cc")) as f:
    main = f.read()
  assert f"MicroMutableOpResolver<{len(figures['ops'])}>" in main
  for op in figures["ops"]:
    assert f"resolver.{mcu._op_method(op)}()" in main  # pylint: disable=W0212
  # pylint: disable=protected-access
  for model, arena in ((encoder, figures["arena_bytes"]),
                       (slice_coder, figures["slice_arena_bytes"])):
    assert mcu._runs(model, arena) and not mcu._runs(model, arena - 16)


def _served_as_the_model(bundle_dir, messages, images):
  """The server decodes the first messages as the model in the bundle's
  run dir does; (the server's classes of all, Keras' of `images`)."""
  served = BundleServer(bundle_dir)
  loaded = model_dir.load(os.path.join(os.path.dirname(bundle_dir), "run"))
  for message in messages[:20]:
    np.testing.assert_array_equal(served.decode(message),
                                  codec.decode_latent(loaded, message))
  keras = tf.argmax(loaded.model(data.to_float(images), training=False)[
      "logits"], -1).numpy()
  return server_classes(bundle_dir, messages), keras


@pytest.mark.slow
def test_conditional_tflm_messages_are_the_edges(conditional, test_digits):
  """Real digits: TFLM runs the int8 encoder and the slice coder; the C
  coder writes exactly the Linux edge's messages for the same int8
  outputs, which the server decodes as the model does. On the edge's own
  LiteRT outputs, the C coder writes `EdgeEncoder.encode_messages`'s
  bytes."""
  bundle_dir, program = conditional
  images, labels = test_digits
  hyper_name, latent_name = (stream["name"] for stream in
                             read_manifest(bundle_dir)["streams"])
  pixels, litert = litert_conditional(bundle_dir, images)
  outputs = tflm_outputs(bundle_dir, pixels)
  hyper, latent = outputs[hyper_name], outputs[latent_name]
  values, indexes = tflm_slice_coder(bundle_dir, hyper, latent)
  messages = c_conditional_messages(program, hyper, values, indexes)
  edge = edge_conditional_messages(bundle_dir, hyper, latent)
  assert messages == edge
  classes, keras = _served_as_the_model(bundle_dir, messages, images)
  differ = np.mean([np.mean(outputs[name] != litert[name])
                    for name in (hyper_name, latent_name)])
  kind = read_manifest(bundle_dir)["streams"][1]["tables"]
  print(f"{kind} stream: TFLM vs LiteRT int8 outputs differ on "
        f"{differ:.4%} of elements; accuracy TFLM + C coder "
        f"{np.mean(classes == labels):.4f}, Keras "
        f"{np.mean(keras == labels):.4f} on {len(images)} digits")
  assert abs(np.mean(classes == labels) - np.mean(keras == labels)) <= .03
  # The edge's own path (LiteRT's encoder and slice coder) through the C
  # coder: EdgeEncoder.encode_messages's bytes.
  encoder = EdgeEncoder(bundle_dir, int8=True)
  assert c_conditional_messages(
      program, litert[hyper_name],
      *encoder.latents(images)[latent_name]) == encoder.encode_messages(
          images)


@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and
                         shutil.which("qemu-system-arm")),
                    reason="no arm-none-eabi-gcc or qemu-system-arm: run "
                    "tools/setup.sh")
@pytest.mark.slow
def test_cortex_m4_codes_conditional_latents_as_the_host(conditional,
                                                         test_digits,
                                                         tmp_path):
  """A conditional bundle's coder on QEMU's mps2-an386 (Cortex-M4, -Os)
  codes fixed hyper-latents, values and indexes (real digits' and extreme
  ones, escapes included) into the host's bytes, which are the edge's."""
  bundle_dir, program = conditional
  encoder = EdgeEncoder(bundle_dir, int8=True)
  images = test_digits[0][:4]
  hyper_name, latent_name = (stream["name"] for stream in
                             encoder.manifest["streams"])
  hyper = litert_conditional(bundle_dir, images)[1][hyper_name]
  values, indexes = encoder.latents(images)[latent_name]
  source = os.path.join(bundle_dir, mcu.MCU_DIR)
  with open(os.path.join(source, "tfvaeclf_model.h")) as f:
    bound = int(re.search(r"#define TFVAECLF_LATENT_VALUE_BOUND (\d+)",
                          f.read()).group(1))
  rng = np.random.default_rng(2)
  hyper = np.concatenate([hyper, np.full_like(hyper[:1], 127),
                          rng.integers(-128, 128, hyper[:2].shape)])
  values = np.concatenate([values, np.full_like(values[:1], -bound),
                           rng.integers(-bound, bound + 1, values[:2].shape)])
  indexes = np.concatenate([indexes, rng.integers(
      0, int(np.max(indexes)) + 1, indexes[:3].shape)])
  header = tmp_path / "fixed_latents.h"
  header.write_text(fixed_conditional_header(hyper, values, indexes))
  on_m4 = subprocess.run(
      [os.path.join(REPO, "tools", "mcu", "qemu.sh"), source, str(header),
       str(tmp_path / "arm")], capture_output=True, text=True, check=True)
  host = c_conditional_messages(program, hyper, values, indexes)
  assert [bytes.fromhex(line) for line in on_m4.stdout.split()] == host
  assert host[:4] == encoder.encode_messages(images)
  print((tmp_path / "arm" / "size.txt").read_text())


@pytest.fixture(scope="module")
def integer(mnist, tmp_path_factory):
  """A small joint model with the integer_context coder, trained for one
  epoch on 2000 real digits, exported through the CLI with --mcu; its
  harness."""
  directory = tmp_path_factory.mktemp("integer_context")
  run = train_small_joint(directory / "run", mnist, 2000, lmbda=1.0,
                          entropy_model="integer_context")
  out = cli_export_mcu(run, str(directory / "bundle"))
  return out, build_harness(out)


@pytest.mark.slow
def test_integer_bundle_runs_only_the_int8_encoder(integer):
  """No float model after the encoder: no slice coder files, one TFLM
  model with its measured arena, the integer predictor's C and its work
  space stated, the example calling the integer writer."""
  bundle_dir, _ = integer
  manifest = read_manifest(bundle_dir)
  figures = manifest["mcu"]
  files = set(manifest["files"])
  assert not {f"mcu/{name}" for name in (
      "slice_coder_data.c", "slice_coder_data.h", mcu.SLICE_CODER)} & files
  assert {f"mcu/{name}" for name in (
      "slice_predictor.c", "int_layers.c", "tfvaeclf_integer_message.c")} \
      <= files
  assert "slice_arena_bytes" not in figures and figures["work_bytes"] > 0
  source = os.path.join(bundle_dir, mcu.MCU_DIR)
  with open(os.path.join(source, "main.cc")) as f:
    main = f.read()
  assert "tfvaeclf_encode_integer_message" in main
  assert "slice_coder" not in main
  with open(os.path.join(source, "tfvaeclf_model.h")) as f:
    header = f.read()
  assert f"#define TFVAECLF_WORK_BYTES {figures['work_bytes']}" in header
  assert "#define TFVAECLF_INTEGER_PREDICTOR 1" in header
  with open(os.path.join(source, "tfvaeclf.mk")) as f:
    makefile = f.read()
  for name in mcu.coder_sources(source) + ["model_data.c"]:
    assert f"$(TFVAECLF_DIR){name}" in makefile


@pytest.mark.slow
def test_integer_c_messages_are_the_edges(integer, test_digits):
  """Real digits: from the int8 encoder's outputs, under TFLM or the
  edge's LiteRT, the C predictor and coder write exactly the Python edge's
  messages (`EdgeEncoder.encode_messages` on LiteRT's), which the server
  decodes as the model does and classifies as Keras does."""
  bundle_dir, program = integer
  images, labels = test_digits
  hyper_name, latent_name = (stream["name"] for stream in
                             read_manifest(bundle_dir)["streams"])
  pixels, litert = litert_conditional(bundle_dir, images)
  assert c_integer_messages(program, litert[hyper_name],
                            litert[latent_name]) == EdgeEncoder(
                                bundle_dir, int8=True).encode_messages(images)
  outputs = tflm_outputs(bundle_dir, pixels)
  messages = c_integer_messages(program, outputs[hyper_name],
                                outputs[latent_name])
  assert messages == edge_conditional_messages(
      bundle_dir, outputs[hyper_name], outputs[latent_name])
  classes, keras = _served_as_the_model(bundle_dir, messages, images)
  assert abs(np.mean(classes == labels) - np.mean(keras == labels)) <= .03


@pytest.mark.skipif(not (shutil.which("arm-none-eabi-gcc") and
                         shutil.which("qemu-system-arm")),
                    reason="no arm-none-eabi-gcc or qemu-system-arm: run "
                    "tools/setup.sh")
@pytest.mark.slow
def test_cortex_m4_predicts_and_codes_as_the_host(integer, test_digits,
                                                  tmp_path):
  """The integer predictor and coder on QEMU's mps2-an386 (Cortex-M4,
  soft float ABI, -Os) code real digits' int8 outputs and extreme ones
  into the host's bytes, which are the edge's; no object of the coder
  calls a floating-point routine."""
  bundle_dir, program = integer
  manifest = read_manifest(bundle_dir)
  hyper_name, latent_name = (s["name"] for s in manifest["streams"])
  outputs = litert_conditional(bundle_dir, test_digits[0][:4])[1]
  hyper, latent = outputs[hyper_name], outputs[latent_name]
  rng = np.random.default_rng(3)
  hyper = np.concatenate([hyper, np.full_like(hyper[:2], 127),
                          rng.integers(-128, 128, hyper[:2].shape)])
  latent = np.concatenate([latent, np.full_like(latent[:1], -128),
                           np.full_like(latent[:1], 127),
                           rng.integers(-128, 128, latent[:2].shape)])
  hyper, latent = hyper.astype(np.int8), latent.astype(np.int8)
  header = tmp_path / "fixed_latents.h"
  header.write_text(fixed_integer_header(hyper, latent))
  source = os.path.join(bundle_dir, mcu.MCU_DIR)
  arm = tmp_path / "arm"
  on_m4 = subprocess.run(
      [os.path.join(REPO, "tools", "mcu", "qemu.sh"), source, str(header),
       str(arm)], capture_output=True, text=True, check=True)
  host = c_integer_messages(program, hyper, latent)
  assert [bytes.fromhex(line) for line in on_m4.stdout.split()] == host
  assert host == edge_conditional_messages(bundle_dir, hyper, latent)
  objects = [str(arm / f"{name[:-2]}.o") for name in
             mcu.coder_sources(source)]
  undefined = subprocess.run(["arm-none-eabi-nm", "--undefined-only",
                              *objects], capture_output=True, text=True,
                             check=True).stdout
  floating = [s for s in undefined.split()
              if re.match(r"__aeabi_([fd]|[il]2[fd]|ui2[fd]|ul2[fd])", s)]
  assert not floating, floating
  print((arm / "size.txt").read_text())
