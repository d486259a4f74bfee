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
from tfvaeclf.coding import bundle

from export import encoder, mcu, server

__all__ = ["calibration_images", "calibration_sample", "export_bundle"]


def _channel_stream(name, coder, spatial_shape, **extra):
  """The manifest entry and the tables.npz arrays of a stream coded with a
  table per channel by the factorized `coder`."""
  tables = coder.tables()
  stream = {"name": name, "tables": "channel",
            "shape": [*spatial_shape, coder.channels], "dtype": "int32",
            **extra}
  arrays = {"cdf": tables["cdf"], "cdf_offset": tables["cdf_offset"],
            "coding_rank": np.int32(coder.coding_rank),
            "precision": np.int32(coder.range_coder_precision),
            "shape": np.array(stream["shape"], np.int32)}
  return stream, {f"{name}/{k}": v for k, v in arrays.items()}


def _streams(model, codec):
  """What the edge codes and the server decodes, per stream of the coder.

  A factorized or dithered coder writes one stream, the whole latent, table
  = channel; the conditional coders write two: the hyper-latent (channel)
  and the latent (indexed, with the slice coder that picks its tables). A
  dithered coder's stream is its symbol coder's, plus the "dither" the board
  adds before rounding: the edge encoder still outputs y. (No isinstance on
  `tfvaeclf.entropy`'s coders: importing it imports TFC, which
  `export.server` must not need.)
  """
  coder = model.coder
  if codec.num_streams == 2:
    hyper_name, name = codec.stream_names
    z_shape = coder.hyper_analysis(
        np.zeros([1, *codec.latent_shape, coder.channels],
                 np.float32)).shape[1:-1]
    hyper, arrays = _channel_stream(hyper_name, coder.hyper_coder, z_shape)
    tables = coder.tables()
    latent = {"name": name, "tables": "indexed",
              "shape": [*codec.latent_shape, coder.channels],
              "dtype": "int32",
              "conditional": {
                  "on": hyper_name, "slices": list(coder.slice_sizes),
                  "num_scales": coder.num_scales,
                  "model": bundle.SLICE_CODER}}
    arrays.update({
        f"{name}/cdf": tables["latent/cdf"],
        f"{name}/cdf_offset": tables["latent/cdf_offset"],
        f"{name}/coding_rank": np.int32(coder.coding_rank),
        f"{name}/precision": np.int32(coder.range_coder_precision),
        f"{name}/shape": np.array(latent["shape"], np.int32)})
    return [hyper, latent], arrays
  dithered = {}
  if model.dither_seed is not None:
    dithered = {"dither": {"seed": coder.seed, "levels": coder.levels}}
    coder = coder.symbol_coder
  (name,) = codec.stream_names
  stream, arrays = _channel_stream(name, coder, codec.latent_shape,
                                   **dithered)
  return [stream], arrays


def _encode_streams(model, streams):
  """float images -> {stream name: what the board quantizes}: the latent,
  and a conditional coder's hyper-latent of it."""
  names = [stream["name"] for stream in streams]

  def encode_streams(images):
    latent = model.encode(images, training=False)
    if len(names) == 1:
      return {names[0]: latent}
    return {names[0]: model.coder.hyper_analysis(latent), names[1]: latent}

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
  streams, tables = _streams(model, codec)
  encode_streams = _encode_streams(model, streams)
  edge = {}
  for name, images in ((bundle.ENCODER, None),
                       (bundle.ENCODER_INT8, calibration)):
    flatbuffer = encoder.convert(
        encode_streams, model.config.image_shape, images)
    fileio.write_bytes(os.path.join(directory, name), flatbuffer)
    edge[name] = encoder.describe(flatbuffer)
  parameters, slice_coder = {}, {}
  if "conditional" in streams[-1]:
    parameters = encoder.parameter_functions(model.coder, codec.latent_shape)
    converted = encoder.convert_function(encoder.slice_coder_function(
        model.coder, codec.latent_shape))
    fileio.write_bytes(os.path.join(directory, bundle.SLICE_CODER),
                       converted)
    slice_coder = {"slice_coder": encoder.describe(converted)}
  with fileio.atomic_writer(os.path.join(directory, bundle.TABLES)) as f:
    np.savez(f, **tables)
  board = {}
  if with_mcu:
    board_slice_coder = (mcu.convert_slice_coder(model.coder,
                                                 codec.latent_shape)
                         if "conditional" in streams[-1] else None)
    board = {"mcu": mcu.write_mcu(directory, codec.fingerprint, streams,
                                  tables, edge[bundle.ENCODER_INT8],
                                  flatbuffer, board_slice_coder)}
  signatures = server.save(model, streams[-1]["shape"],
                           os.path.join(directory, bundle.SERVER_DIR),
                           parameters)
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
               **slice_coder},
      **board,
      "server": {"signatures": signatures,
                 "load": "tf.saved_model.load(BUNDLE/server) or TF Serving; "
                         "its input is the latent decoded by tfvaeclf "
                         "(export.server.BundleServer)"},
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
