"""Compress images to a file or messages, classify or reconstruct them.

    python -m tfvaeclf.codec compress   --model_dir=DIR --output=OUT \
        [--format=file|message] [--first_counter=N] IMAGE...
    python -m tfvaeclf.codec classify   --model_dir=DIR FILE
    python -m tfvaeclf.codec decompress --model_dir=DIR --output=PNG FILE

Each IMAGE becomes the model's input as training made its inputs
(`imageio.Preprocessing`): a model trained with --image_size takes files of
any size and mode (converted, resized to cover, centre-cropped); one trained
on images as they came takes only files of its size and mode.

`--format=file` (the default) writes one multi-image file; `message` writes
one compact message per image (`tfvaeclf.coding.bitstream`): OUT for one image,
OUT_0, OUT_1, ... (keeping OUT's extension) for several. A dithered model's
messages take counters 0, 1, ... or from `--first_counter`, to continue a
sequence. `classify` and `decompress` read either, told apart by the first
bytes; `classify` prints one class name per image and never rebuilds the
image. They take files of at most `--max_images` images (the server's
256), as a file from outside could ask for any work. Bad inputs end with
one line on stderr and exit code 2; outputs are written whole or not at
all.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

from absl import flags
import numpy as np
import tensorflow as tf

from tfvaeclf import data, fileio, model_dir as model_dir_lib
from tfvaeclf.coding import bitstream

__all__ = ["compress_images", "compress_messages", "decode_latent",
           "classify_file", "reconstruct_file"]

FLAGS = flags.FLAGS
flags.DEFINE_string("output", None,
                    "compress: the file to write (the message name, with "
                    "--format=message); decompress: the PNG path (several "
                    "images are written as NAME_0.png, NAME_1.png…).")
flags.DEFINE_enum("format", "file", ["file", "message"],
                  "compress: one multi-image file, or a message per image.")
flags.DEFINE_integer("first_counter", None,
                     "compress --format=message, dithered models: the "
                     "counter of the first message (default 0).")


def _strings(loaded, images, **coder_options):
  strings, _ = loaded.model.compress(data.to_float(images), **coder_options)
  return [s.numpy().tolist() for s in strings]


def compress_images(loaded, images):
  """uint8 images (N, H, W, C) -> the bytes of a tfvaeclf file."""
  return loaded.codec.pack(_strings(loaded, images))


def compress_messages(loaded, images, first_counter=None):
  """uint8 images (N, H, W, C) -> one message's bytes per image.

  A dithered model codes image i with dither index `first_counter + i`
  (default 0), its message's counter.
  """
  options = {}
  if loaded.codec.dithered:
    options["first_index"] = first_counter or 0
  return loaded.codec.pack_messages(_strings(loaded, images, **options),
                                    first_counter)


def decode_latent(loaded, file_bytes, max_images=None):
  """Checks a file or message against the model and range-decodes its
  latents with the project's bounded decoder (the coder's `decode`); a
  file of more than `max_images` images is refused before any is
  decoded."""
  coded = loaded.codec.read(file_bytes, max_images)
  # The receiver draws the dither from the file's seed, not its own, and
  # from the message's counter.
  options = ({} if coded.dither_seed is None
             else {"seed": coded.dither_seed,
                   "dither_indices": coded.dither_index + np.arange(
                       coded.num_images)})
  return loaded.model.coder.decode(coded.strings, coded.latent_shape,
                                   **options)


def classify_file(loaded, file_bytes, max_images=None):
  """File or message bytes -> predicted class indices, straight from the
  latent."""
  logits = loaded.model.classify(
      decode_latent(loaded, file_bytes, max_images))
  return tf.argmax(logits, -1).numpy()


def reconstruct_file(loaded, file_bytes, max_images=None):
  """File or message bytes -> uint8 images, for models that have a
  decoder."""
  if not loaded.model.has_decoder:
    raise cli.UserError(
        f"model {loaded.config['model']} was trained without a decoder "
        "(train with --decoder to reconstruct images)")
  x_hat = loaded.model.reconstruct(
      decode_latent(loaded, file_bytes, max_images))
  return np.clip(np.round(x_hat.numpy() * 255.), 0, 255).astype(np.uint8)


def _read_file(path):
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError as e:
    raise cli.UserError(f"cannot read {path}: {e.strerror}") from None


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
  max_images = (bitstream.MAX_IMAGES if FLAGS.max_images is None
                else FLAGS.max_images)
  if max_images < 1:
    raise cli.UserError(f"--max_images={max_images}: must be positive")
  if FLAGS.first_counter is not None and FLAGS.format != "message":
    raise cli.UserError("--first_counter needs --format=message")
  loaded = model_dir_lib.load(FLAGS.model_dir)
  if FLAGS.first_counter is not None and not loaded.codec.dithered:
    raise cli.UserError(
        f"--first_counter is for dithered models; {loaded.config['model']} "
        "sends no counter")

  if command == "compress":
    images = data.read_image_files(paths, loaded.preprocessing)
    if FLAGS.format == "file":
      fileio.write_bytes(FLAGS.output, compress_images(loaded, images))
    else:
      try:
        messages = compress_messages(loaded, images, FLAGS.first_counter)
      except ValueError as e:  # a counter out of range
        raise cli.UserError(str(e)) from None
      for path, message in zip(
          fileio.numbered_paths(FLAGS.output, len(messages)), messages):
        fileio.write_bytes(path, message)
  elif command == "classify":
    names = loaded.config["class_names"]
    for index in classify_file(loaded, _read_file(paths[0]), max_images):
      print(names[index])
  else:
    images = reconstruct_file(loaded, _read_file(paths[0]), max_images)
    for path, image in zip(
        fileio.numbered_paths(FLAGS.output, len(images), ".png"), images):
      data.write_png(path, image)


if __name__ == "__main__":
  cli.run(main)
