"""Compress images to a file, classify or reconstruct them from it.

    python -m tfvaeclf.codec compress   --model_dir=DIR --output=FILE IMAGE...
    python -m tfvaeclf.codec classify   --model_dir=DIR FILE
    python -m tfvaeclf.codec decompress --model_dir=DIR --output=PNG FILE

`classify` prints one class name per image and never rebuilds the image.
Bad files and images end with one line on stderr and exit code 2; outputs
are written whole or not at all.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import os

from absl import flags
import numpy as np
import tensorflow as tf

from tfvaeclf import bitstream, data, fileio, model_dir as model_dir_lib

__all__ = ["compress_images", "decode_latent", "classify_file",
           "reconstruct_file"]

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None,
                    "compress: the file to write; decompress: the PNG path "
                    "(several images are written as NAME_0.png, NAME_1.png…).")


def compress_images(loaded, images):
  """uint8 images (N, H, W, C) -> the bytes of a tfvaeclf file."""
  strings, _ = loaded.model.compress(data.to_float(images))
  return loaded.codec.pack([s.numpy() for s in strings])


def decode_latent(loaded, file_bytes):
  """Checks a file against the model and range-decodes its latents with the
  project's bounded decoder (the coder's `decode`)."""
  coded = loaded.codec.unpack(file_bytes)
  # The receiver draws the dither from the file's seed, not its own.
  options = ({} if coded.dither_seed is None
             else {"seed": coded.dither_seed})
  return loaded.model.coder.decode(coded.strings, coded.latent_shape,
                                   **options)


def classify_file(loaded, file_bytes):
  """File bytes -> predicted class indices, straight from the latent."""
  logits = loaded.model.classify(decode_latent(loaded, file_bytes))
  return tf.argmax(logits, -1).numpy()


def reconstruct_file(loaded, file_bytes):
  """File bytes -> uint8 images, for models that have a decoder."""
  if not loaded.model.has_decoder:
    raise cli.UserError(
        f"model {loaded.config['model']} was trained without a decoder "
        "(train with --decoder to reconstruct images)")
  x_hat = loaded.model.reconstruct(decode_latent(loaded, file_bytes))
  return np.clip(np.round(x_hat.numpy() * 255.), 0, 255).astype(np.uint8)


def _read_file(path):
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise cli.UserError(f"cannot read {path}: {e.strerror}") from None


def _png_paths(output, count):
  if count == 1:
    return [output]
  stem, ext = os.path.splitext(output)
  return [f"{stem}_{i}{ext or '.png'}" for i in range(count)]


def main(argv):
  command, *paths = argv[1:] or [None]
  if command not in ("compress", "classify", "decompress"):
    raise cli.UserError(
        "usage: python -m tfvaeclf.codec {compress,classify,decompress} "
        "--model_dir=DIR [--output=PATH] FILE...")
  if not FLAGS.model_dir:
    raise cli.UserError("--model_dir is required")
  if not paths:
    raise cli.UserError(f"{command}: no input files given")
  if command != "classify" and not FLAGS.output:
    raise cli.UserError(f"{command}: --output is required")
  if command != "compress" and len(paths) != 1:
    raise cli.UserError(f"{command} reads exactly one file")
  loaded = model_dir_lib.load(FLAGS.model_dir)

  if command == "compress":
    images = data.read_image_files(paths, loaded.model.config.image_shape)
    fileio.write_bytes(FLAGS.output, compress_images(loaded, images))
  elif command == "classify":
    names = loaded.config["class_names"]
    for index in classify_file(loaded, _read_file(paths[0])):
      print(names[index])
  else:
    images = reconstruct_file(loaded, _read_file(paths[0]))
    for path, image in zip(_png_paths(FLAGS.output, len(images)), images):
      data.write_png(path, image)


if __name__ == "__main__":
  cli.run(main)
