#!/usr/bin/env python3
"""Do a conditional coder's board and server pick the same tables?

    tools/bench_predictor.py --float_dir=runs/mnist_context \
        --integer_dir=runs/mnist_integer_context [--num_images=10000]

`--float_dir` is a `context` model, `--integer_dir` an `integer_context`
model trained on its frozen encoder (`--freeze_encoder_from`). Each is
exported into a temporary bundle; the latents are the Keras encoder's, so
that only the predictors differ. Prints three Markdown tables:

1. The integer predictor: every latent element's table index as the Keras
   layers compute it (TensorFlow, float32 on integers), as the C predictor
   and its numpy twin compute it on the board, and as the server's decode
   of the board's file finds it. Target: 0 mismatches.
2. The float32 slice coder, as boards run it: LiteRT with XNNPACK (what the
   edge runtime uses), LiteRT's optimized kernels without it, its
   reference kernels (`BUILTIN_REF`) and TFLM (one image at a time, the
   microcontroller's interpreter), against the index the server's
   TensorFlow predicts. A mismatch sends that image's decoder down another
   table.
3. Payload bytes per image of both models, from real strings. Target: the
   integer model's at most 2% above the float one's.

Exits 1 if a target is missed.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import os
import sys
import tempfile

from absl import flags
import numpy as np
import tqdm

from tfvaeclf import data, export, model_dir
from tfvaeclf.coding import bundle
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.export import mcu
from tfvaeclf.serve.bundle_server import BundleServer

FLAGS = flags.FLAGS
flags.DEFINE_string("float_dir", None, "A finished context model dir.")
flags.DEFINE_string("integer_dir", None,
                    "A finished integer_context model dir, trained on "
                    "--float_dir's frozen encoder.")
flags.DEFINE_integer("num_images", 10000, "Test images to code.")
flags.mark_flags_as_required(["float_dir", "integer_dir"])

BATCH = 500
TARGET_BYTES_RATIO = 1.02


def _latents(loaded, images):
  """The Keras encoder's (z_hat, y) of uint8 images, as the board's float32
  encoder gives them."""
  outputs = loaded.model.analysis(data.to_float(images), training=False)
  z_hat = np.round(loaded.model.coder.hyper_analysis(outputs).numpy())
  return z_hat.astype(np.float32), outputs.numpy()


def _server_indexes(served):
  """Wraps the server's integer predictor: returns the list its predictions'
  indexes are appended to, slice after slice of each decode."""
  # pylint: disable=protected-access
  stream = served._plan[1]
  predict, seen = stream.predictor.predict, []

  def recording(k, features, decoded):
    loc_q, index = predict(k, features, decoded)
    seen.append(index.reshape(len(index), -1))
    return loc_q, index

  stream.predictor.predict = recording
  return seen


def integer_table(loaded, bundle_dir, images):
  """Rows (path, elements, mismatching elements, images with one) of the
  integer predictor against Keras; and whether all agree."""
  coder = loaded.model.coder
  edge = EdgeEncoder(bundle_dir)
  stream = edge._plan[1]  # pylint: disable=protected-access
  numpy_predictor = coder.predictor(native_layers=False)
  served = BundleServer(bundle_dir, loaded.fingerprint)
  recorded = _server_indexes(served)
  paths = ("C predictor (board)", "numpy twin", "server's decode")
  found = {path: [] for path in paths}
  keras = []
  for start in tqdm.trange(0, len(images), BATCH, desc="integer predictor",
                           unit="batch"):
    z_hat, y = _latents(loaded, images[start:start + BATCH])
    _, indexes = coder.slice_symbols(y, z_hat)
    keras.append(indexes.numpy())
    values, c_indexes = stream.quantize(y, coded={"hyper": z_hat})
    found[paths[0]].append(c_indexes)
    c_predictor, stream.predictor = stream.predictor, numpy_predictor
    found[paths[1]].append(stream.quantize(y, coded={"hyper": z_hat})[1])
    stream.predictor = c_predictor
    recorded.clear()
    served.decode(edge.codec.pack(edge.code({"hyper": z_hat.astype(np.int64),
                                             "latent": (values, c_indexes)})))
    found[paths[2]].append(np.concatenate(recorded, 1))
  keras = np.concatenate(keras)
  rows = [("Keras (TF float32 on integers)", keras.size, 0, 0)]
  for path in paths:
    differ = np.concatenate(found[path]) != keras
    rows.append((path, differ.size, int(differ.sum()),
                 int(differ.any(1).sum())))
  return rows, all(row[2] == 0 for row in rows)


def _litert(flatbuffer, resolver):
  from ai_edge_litert import interpreter as litert
  return litert.Interpreter(
      model_content=flatbuffer,
      experimental_op_resolver_type=getattr(litert.OpResolverType, resolver))


def float_table(loaded, bundle_dir, images):
  """Rows (runtime, elements, mismatching elements, images with one, the
  largest index difference) of the float32 slice coder against the server's
  TensorFlow prediction."""
  from tflite_micro import runtime as tflm
  coder = loaded.model.coder
  latent_shape = loaded.codec.latent_shape
  single = mcu.convert_board_model(coder, latent_shape, bundle.SLICE_CODER)
  positions = mcu.tensor_positions(single)
  micro = tflm.Interpreter.from_bytes(single,
                                      arena_size=mcu.arena_size(single))
  with open(os.path.join(bundle_dir, *bundle.SLICE_CODER.split("/")),
            "rb") as f:
    batched = f.read()
  runtimes = {"LiteRT, XNNPACK (the edge runtime)": "AUTO",
              "LiteRT, optimized kernels without XNNPACK":
                  "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
              "LiteRT, reference kernels (BUILTIN_REF)": "BUILTIN_REF"}
  interpreters, refused = {}, {}
  for name, resolver in runtimes.items():
    try:
      interpreters[name] = _litert(batched, resolver).get_signature_runner()
    except (RuntimeError, ValueError) as e:  # a kernel the resolver lacks
      refused[name] = str(e).splitlines()[0]
  found = {name: [] for name in [*interpreters, "TFLM (one image at a time)"]}
  reference = []
  for start in tqdm.trange(0, len(images), BATCH, desc="float slice coder",
                           unit="batch"):
    z_hat, y = _latents(loaded, images[start:start + BATCH])
    reference.append(coder.slice_symbols(y, z_hat)[1].numpy())
    inputs = {bundle.HYPER_INPUT: z_hat, bundle.LATENT_INPUT: y}
    for name, runner in interpreters.items():
      found[name].append(runner(**inputs)[bundle.INDEXES])
    indexes = []
    for i in range(len(y)):
      for key, value in inputs.items():
        micro.set_input(value[i:i + 1], positions["inputs"][key])
      micro.invoke()
      indexes.append(micro.get_output(positions["outputs"][bundle.INDEXES]))
    found["TFLM (one image at a time)"].append(np.concatenate(indexes))
  reference = np.concatenate(reference)
  rows = [(name, f"cannot run the model: {why}", "", "", "")
          for name, why in refused.items()]
  for name, parts in found.items():
    got = np.concatenate(parts)
    differ = got != reference
    rows.append((name, differ.size, int(differ.sum()),
                 int(differ.any(1).sum()),
                 int(np.abs(got.astype(np.int64) - reference).max())))
  return rows


def payload_bytes(loaded, images):
  """Mean range-coded bytes per image (all strings)."""
  sizes = []
  for start in range(0, len(images), BATCH):
    strings, _ = loaded.model.compress(
        data.to_float(images[start:start + BATCH]))
    sizes.append(sum(np.vectorize(len)(s.numpy()) for s in strings))
  return float(np.mean(np.concatenate(sizes)))


def main(argv):
  del argv
  float_model = model_dir.load(FLAGS.float_dir)
  integer = model_dir.load(FLAGS.integer_dir)
  coders = [m.config["model_config"].get("entropy_model")
            for m in (float_model, integer)]
  if coders != ["context", "integer_context"]:
    raise cli.UserError(f"--float_dir must hold a context model and "
                        f"--integer_dir an integer_context one, not "
                        f"{coders}")
  test = data.load(**dict(integer.config["dataset"], download=False)).test
  images = np.concatenate([batch for batch, _ in test.take(
      FLAGS.num_images).batch(BATCH).as_numpy_iterator()])
  source = integer.config["dataset"].get("name")
  with tempfile.TemporaryDirectory() as directory:
    bundles = {}
    for name, loaded in (("float", float_model), ("integer", integer)):
      bundles[name] = os.path.join(directory, name)
      export.export_bundle(loaded, bundles[name],
                           export.calibration_images(loaded.config, 200))
    rows, agree = integer_table(integer, bundles["integer"], images)
    float_rows = float_table(float_model, bundles["float"], images)
  print(f"\n{source}, {len(images)} test images\n")
  print("| integer predictor | indexes | differ from Keras | images |")
  print("|---|---|---|---|")
  for path, total, differ, affected in rows:
    print(f"| {path} | {total} | {differ} | {affected} |")
  print("\n| float32 slice coder | indexes | differ from the server's TF "
        "| images | largest difference |")
  print("|---|---|---|---|---|")
  for name, total, differ, affected, largest in float_rows:
    print(f"| {name} | {total} | {differ} | {affected} | {largest} |")
  sizes = [payload_bytes(m, images) for m in (float_model, integer)]
  ratio = sizes[1] / sizes[0]
  print(f"\npayload bytes per image: float context {sizes[0]:.3f}, "
        f"integer {sizes[1]:.3f} ({100 * (ratio - 1):+.2f}%)\n")
  bytes_met = ratio <= TARGET_BYTES_RATIO
  print(f"target 1, indexes equal on every path: "
        f"{'met' if agree else 'MISSED'}")
  print(f"target 3, integer payload <= {TARGET_BYTES_RATIO:.2f} x float: "
        f"{'met' if bytes_met else 'MISSED'}")
  sys.exit(0 if agree and bytes_met else 1)


if __name__ == "__main__":
  cli.run(main)
