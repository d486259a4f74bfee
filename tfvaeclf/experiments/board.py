"""What the board runs for a finished model dir, and how well: its budget.

    python -m tfvaeclf.experiments.board --model_dir=DIR \
        [--calibration_examples=500] [--num_images=N] [--data_dir=DIR]

Coding for the server only pays where the board cannot hold a classifier
as good, so every point is set against what its board runs (the edge
budget, as MLPerf Tiny counts it: flash, compute and memory):

* `edge_int8_bytes`: the int8 TFLite model the board stores. For a coded
  model, its encoder (images -> latent) as the exporter converts it; for
  the uncompressed `classifier` kind, the whole classifier (images ->
  logits), since the board would run it and send only the class.
* `board_models`: the float32 models a coder runs on the board after the
  encoder (the context coder's slice coder), each for one image as TFLM
  runs it, with its bytes, parameters, multiply-accumulates and arena; or
  the C it runs there (the integer_context coder's slice predictor: int8
  bytes, parameters, multiply-accumulates, activation bytes);
  `board_model_bytes` is their sum (0 for the factorized coder).
* `edge_parameters`, `edge_float_bytes` (the same part in float32),
  `edge_macs` (multiply-accumulates of one image, `sizes.macs`) and
  `edge_arena_bytes` (the smallest TFLM arena, `mcu.arena_size`).
* `accuracy`: of the int8 model on the test split (`num_images` of it).
  A classifier: the argmax of its int8 logits. A coded model: its int8
  encoder's latents quantized and range-coded by the board's code
  (`tfvaeclf.edge.EdgeEncoder`), decoded and classified by the server's
  (`tfvaeclf.serve.bundle_server.BundleServer`), from a bundle exported
  for the measurement.
* `class_bits`: ceil(log2(classes)), the message of a board that sends
  the class.

Written into the model dir (`ModelDir.board_path`, board.json), where
`tfvaeclf.experiments.points` reads it.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import contextlib
import math
import os
import tempfile

from absl import flags
import numpy as np
import tqdm

from tfvaeclf import data, model_dir as model_dir_lib
from tfvaeclf.coding import bundle
from tfvaeclf.edge.encoder import EdgeEncoder, pixel_table
from tfvaeclf.edge.interpreter import SignatureModel
from tfvaeclf.export import encoder, exporter, mcu, sizes
from tfvaeclf.layout import ModelDir
from tfvaeclf.serve.bundle_server import BundleServer

__all__ = ["SIZE_FIELDS", "edge_part", "edge_size", "measure", "measure_dir",
           "format_table"]

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", None,
                     "Test images the int8 accuracy is measured on "
                     "(default: the whole test split).")

_BATCH = 500
# The fields of `sizes.edge_size`: what a split sweep caches of a point.
SIZE_FIELDS = ("edge_parameters", "edge_float_bytes", "edge_int8_bytes",
               "edge_macs")


def edge_part(loaded):
  """(float images -> {name: tensor}, what it is): the part the board runs
  as one int8 model."""
  model = loaded.model
  if model.coder is None:
    return (lambda images: {"logits": model.classify(images)},
            "the whole classifier, images -> logits: the board sends the "
            "class")
  return (exporter.edge_streams(model),
          "the encoder, images -> what the coder quantizes (a conditional "
          "coder's hyper-latent too), as the exporter converts it")


def _parameters(function, image_shape):
  return sizes.parameters(encoder.edge_function(function, image_shape))


def edge_size(directory, calibration):
  """`sizes.edge_size` of the model in `directory` (int8 ranges from
  `calibration()`), kept in its board.json and read back from there."""
  layout = ModelDir(directory)
  cached = layout.board()
  if cached is not None and all(field in cached for field in SIZE_FIELDS):
    return {field: cached[field] for field in SIZE_FIELDS}
  loaded = model_dir_lib.load(directory, allow_uncompressed=True)
  function, _ = edge_part(loaded)
  shape = loaded.model.config.image_shape
  size = sizes.edge_size(function, shape, _parameters(function, shape),
                         calibration())
  layout.write_board(size)
  return size


def _tflite_classes(flatbuffer, directory):
  """uint8 images -> classes, by the int8 classifier `flatbuffer` (written
  into `directory`, as a board's runtime reads a file)."""
  path = os.path.join(directory, "classifier_int8.tflite")
  with open(path, "wb") as f:
    f.write(flatbuffer)
  runner = SignatureModel(path)
  pixels = pixel_table(runner.inputs[bundle.ENCODER_INPUT])

  def classes(images):
    logits = runner.run({bundle.ENCODER_INPUT: pixels[images]})["logits"]
    # The int8 logits rank as their dequantized values (a positive scale).
    return np.argmax(logits, axis=-1)

  return classes


def _board_model(coder, latent_shape, name):
  """A float32 board model of `coder`, for one image as TFLM runs it."""
  function = coder.board_functions(latent_shape, batch_size=1)[name]
  flatbuffer = mcu.convert_board_model(coder, latent_shape, name)
  return {"dtype": "float32", "bytes": len(flatbuffer),
          "parameters": sizes.parameters(function),
          "macs": sizes.macs(flatbuffer),
          "arena_bytes": mcu.arena_size(flatbuffer)}


@contextlib.contextmanager
def _board(loaded, calibration):
  """Yields (float32 flatbuffer, int8 flatbuffer, {board model: figures},
  uint8 images -> classes as the board and the server find them)."""
  model = loaded.model
  shape = model.config.image_shape
  with tempfile.TemporaryDirectory() as directory:
    if model.coder is None:
      function, _ = edge_part(loaded)
      int8 = encoder.convert(function, shape, calibration)
      yield (encoder.convert(function, shape), int8, {},
             _tflite_classes(int8, directory))
      return
    out = os.path.join(directory, "bundle")
    exporter.export_bundle(loaded, out, calibration)
    with open(os.path.join(out, bundle.ENCODER), "rb") as f:
      float32 = f.read()
    with open(os.path.join(out, bundle.ENCODER_INT8), "rb") as f:
      int8 = f.read()
    latent_shape = loaded.codec.latent_shape
    board_models = {
        os.path.splitext(os.path.basename(name))[0]: _board_model(
            model.coder, latent_shape, name)
        for name in model.coder.board_functions(latent_shape)}
    board_models.update(model.coder.board_code(latent_shape))
    edge = EdgeEncoder(out, int8=True)
    server = BundleServer(out, loaded.fingerprint)

    def classes(images):
      return server.classify(server.decode(edge.codec.pack(
          edge.encode(images))))["classes"]

    yield float32, int8, board_models, classes


def _accuracy(classes, test, count, progress):
  """(accuracy, images) of `classes` on the (uint8 image, label) dataset
  `test` of `count` images (None: unknown)."""
  correct = seen = 0
  with tqdm.tqdm(total=count, desc="int8 on the board", unit="image",
                 disable=not progress) as bar:
    for images, labels in test.batch(_BATCH).as_numpy_iterator():
      correct += int(np.sum(classes(images) == labels))
      seen += len(labels)
      bar.update(len(labels))
  return correct / max(seen, 1), seen


def measure(loaded, calibration, test, count=None, progress=True):
  """The board's figures of `loaded` (a model_dir.LoadedModel): sizes, int8
  ranges from `calibration` (float32 images), accuracy on the (uint8
  image, label) dataset `test` of `count` images."""
  model = loaded.model
  shape = model.config.image_shape
  function, what = edge_part(loaded)
  num_classes = len(loaded.config["class_names"])
  with _board(loaded, calibration) as (float32, int8, board_models, classes):
    accuracy, seen = _accuracy(classes, test, count, progress)
  return {
      "model": loaded.config["model"],
      "fingerprint": loaded.fingerprint.hex(),
      "edge": what,
      **sizes.flatbuffer_sizes(float32, int8,
                               _parameters(function, shape)),
      "edge_arena_bytes": mcu.arena_size(int8),
      "board_models": board_models,
      "board_model_bytes": sum(m["bytes"] for m in board_models.values()),
      "accuracy": accuracy,
      "num_images": seen,
      "calibration_examples": len(calibration),
      "num_classes": num_classes,
      "class_bits": math.ceil(math.log2(num_classes)),
  }


def measure_dir(directory, calibration_examples=500, num_images=None,
                data_dir=None, progress=True):
  """`measure` of the finished model in `directory` on its dataset's test
  split (`data_dir` where it is not where training found it), written to
  its board.json; UserError in one line for a missing or unfinished dir
  or dataset."""
  if not os.path.isdir(directory):
    raise cli.UserError(f"{directory}: no such directory")
  loaded = model_dir_lib.load(directory, allow_uncompressed=True)
  if calibration_examples < 1:
    raise cli.UserError("--calibration_examples must be at least 1")
  if num_images is not None and num_images < 1:
    raise cli.UserError("--num_images must be at least 1")
  args = dict(loaded.config["dataset"], download=False)
  if data_dir:
    args["data_dir"] = data_dir
  splits = data.load(**args)
  test = splits.test
  count = int(test.cardinality())
  if num_images:
    test = test.take(num_images)
    count = min(count, num_images) if count >= 0 else num_images
  calibration = exporter.calibration_sample(splits.train,
                                            calibration_examples)
  results = {**measure(loaded, calibration, test,
                       count if count >= 0 else None, progress),
             "split": "test", "data_source": splits.info.source}
  ModelDir(directory).write_board(results)
  return results


def format_table(results):
  """board.json's figures as aligned lines."""
  rows = [(key, value) for key, value in results.items()
          if not isinstance(value, dict)]
  rows += [(f"{name}.{key}", value)
           for name, figures in results["board_models"].items()
           for key, value in figures.items()]
  width = max(len(key) for key, _ in rows)
  return "\n".join(
      f"{key:<{width}}  {value:.4f}" if isinstance(value, float)
      else f"{key:<{width}}  {value}" for key, value in rows)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.model_dir:
    raise cli.UserError(
        "usage: python -m tfvaeclf.experiments.board --model_dir=DIR "
        "[--calibration_examples=500] [--num_images=N] [--data_dir=DIR]")
  results = measure_dir(FLAGS.model_dir, FLAGS.calibration_examples,
                        FLAGS.num_images, FLAGS.data_dir)
  print(format_table(results))
  print(f"wrote {ModelDir(FLAGS.model_dir).board_path}")


if __name__ == "__main__":
  cli.run(main)
