"""Writes a bundle from a loaded model dir, whole or not at all.

Everything is written into a temporary dir beside BUNDLE and renamed into
place at the end, so a failed export (a conversion error, a full disk,
Ctrl-C) leaves no half-written bundle that a board could pick up.
"""

import contextlib
from importlib import metadata
import os
import platform
import secrets
import shutil

import numpy as np

from tfvaeclf import cli, data, fileio
from tfvaeclf.coding import bundle, streams as stream_types

from . import encoder, mcu, server_model

__all__ = ["calibration_images", "calibration_sample", "edge_streams",
           "export_bundle"]


def edge_streams(model):
  """float images -> {stream name: what the board quantizes}: the edge
  encoder's graph, the coder's `edge_outputs` of the model's latent."""
  def encode_streams(images):
    return model.coder.edge_outputs(model.encode(images, training=False))

  return encode_streams


def calibration_images(config, count, data_dir=None):
  """float32 (count, H, W, C): a seeded random sample of the training split.

  Never downloads: the model's dataset must be where training found it.
  """
  args = dict(config["dataset"], download=False)
  if data_dir:
    args["data_dir"] = data_dir
  return calibration_sample(data.load(**args).train, count)


def calibration_sample(train, count):
  """float32 (count, H, W, C): a seeded random sample of the (image, label)
  dataset `train`."""
  sample = train.shuffle(10_000, seed=0).take(count).map(lambda x, y: x)
  return data.to_float(np.stack(list(sample.as_numpy_iterator()))).numpy()


def _versions():
  """What made the bundle (TFC made the tables; the server needs only
  TensorFlow)."""
  packages = ("tfvaeclf", "tensorflow", "tensorflow-compression", "numpy")
  return {"python": platform.python_version(),
          **{name: metadata.version(name) for name in packages}}


def _write(loaded, directory, calibration, with_mcu):
  """Writes every file of the bundle into `directory`, the manifest last."""
  model, codec = loaded.model, loaded.codec
  plan = model.coder.stream_plan(codec.latent_shape)
  streams = stream_types.manifest_entries(plan)
  tables = stream_types.tables_arrays(plan)
  encode_streams = edge_streams(model)
  edge = {}
  for name, images in ((bundle.ENCODER, None),
                       (bundle.ENCODER_INT8, calibration)):
    flatbuffer = encoder.convert(
        encode_streams, model.config.image_shape, images)
    fileio.write_bytes(os.path.join(directory, name), flatbuffer)
    edge[name] = encoder.describe(flatbuffer)
  board_models = {}
  for name, function in model.coder.board_functions(
      codec.latent_shape).items():
    converted = encoder.convert_function(function)
    fileio.write_bytes(os.path.join(directory, name), converted)
    # Described in the manifest's "edge" under its file's stem.
    stem = os.path.splitext(os.path.basename(name))[0]
    board_models[stem] = encoder.describe(converted)
  with fileio.atomic_writer(os.path.join(directory, bundle.TABLES)) as f:
    np.savez(f, **tables)
  board = {}
  if with_mcu:
    board = {"mcu": mcu.write_mcu(directory, codec.fingerprint, plan,
                                  tables, edge[bundle.ENCODER_INT8],
                                  flatbuffer, model.coder,
                                  codec.latent_shape)}
  signatures = server_model.save(
      model, stream_types.input_shape(plan),
      os.path.join(directory, bundle.SERVER_DIR),
      model.coder.server_functions(codec.latent_shape))
  fileio.write_json(os.path.join(directory, bundle.MANIFEST), {
      "format": bundle.FORMAT,
      "format_version": bundle.format_version(streams),
      "model": {"name": loaded.config["model"],
                "fingerprint": loaded.fingerprint.hex(),
                "dataset": loaded.config["dataset"]["name"],
                "class_names": loaded.config["class_names"]},
      **codec.manifest_fields(),
      "image_dtype": "uint8",
      bundle.PREPROCESSING: loaded.preprocessing.record(),
      "streams": streams,
      "edge": {"encoders": edge, "calibration_examples": len(calibration),
               **board_models},
      **board,
      "server": {"signatures": signatures,
                 "load": "tf.saved_model.load(BUNDLE/server) or TF Serving; "
                         "its input is the latent decoded by tfvaeclf "
                         "(tfvaeclf.serve.bundle_server.BundleServer)"},
      "versions": _versions(),
      "files": bundle.file_digests(directory),
  })


def _replace(staging, out):
  """Renames `staging` to `out`, swapping out an older bundle there."""
  if not os.path.exists(out):
    os.rename(staging, out)
    return
  old = f"{staging}.old"
  os.rename(out, old)
  try:
    os.rename(staging, out)
  except BaseException:
    os.rename(old, out)
    raise
  shutil.rmtree(old)


def export_bundle(loaded, out, calibration, with_mcu=False):
  """Exports `loaded` (a model_dir.LoadedModel) to the bundle dir `out`.

  calibration: float32 images in [0, 1] for the int8 encoder (see
  `calibration_images`). with_mcu: also write `mcu/`, C sources for a
  microcontroller (`export.mcu`). An existing bundle at `out` is replaced;
  any other existing path is refused.
  """
  out = os.path.abspath(out)
  if os.path.exists(out) and not os.path.isfile(
      os.path.join(out, bundle.MANIFEST)):
    raise cli.UserError(f"{out} exists and is not a bundle; choose another "
                        "--out or remove it")
  parent, name = os.path.split(out)
  os.makedirs(parent, exist_ok=True)
  staging = os.path.join(parent, f".{name}.{secrets.token_hex(4)}.tmp")
  os.mkdir(staging)
  try:
    _write(loaded, staging, calibration, with_mcu)
    _replace(staging, out)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      shutil.rmtree(staging)
    raise
