"""Codes images into a tfvaeclf file or messages on the board, without
TensorFlow.

    python -m tfvaeclf.edge encode --bundle=BUNDLE [--int8] --output=OUT \
        [--format=file|message] [--first_counter=N] [--verbose] IMAGE...

The file (or the messages: OUT for one image, OUT_0, OUT_1, ... for
several, as `python -m tfvaeclf.codec compress` names them) is what
`python -m tfvaeclf.codec classify --model_dir=DIR` reads. A dithered
bundle's messages take counters 0, 1, ... or from `--first_counter`: a board
passes on its count so that no two of its messages share a dither. Bad
bundles and images end with one line on stderr and exit code 2;
`--verbose` logs which range coder runs. Only numpy, Pillow and a TFLite
runtime are imported (TensorFlow only if no runtime is installed, see
`interpreter`).
"""

import argparse
import logging
import sys

from tfvaeclf import fileio, imageio
from tfvaeclf.coding import bundle
from tfvaeclf.edge.encoder import EdgeEncoder
from tfvaeclf.errors import BundleError, UserError

__all__ = ["main"]


def _parser():
  parser = argparse.ArgumentParser(
      prog="python -m tfvaeclf.edge",
      description="Compress images with an exported bundle's encoder.")
  commands = parser.add_subparsers(dest="command", required=True)
  encode = commands.add_parser(
      "encode", help="images -> a tfvaeclf file or messages")
  encode.add_argument("--bundle", required=True,
                      help="the bundle dir written by python -m export")
  encode.add_argument("--int8", action="store_true",
                      help="use the full-integer encoder")
  encode.add_argument("--output", required=True,
                      help="the file (or message name) to write")
  encode.add_argument("--format", choices=("file", "message"),
                      default="file",
                      help="one multi-image file, or a message per image")
  encode.add_argument("--first_counter", type=int, default=None,
                      help="--format=message, dithered bundles: the counter "
                      "of the first message (default 0)")
  encode.add_argument("--verbose", action="store_true",
                      help="log which range coder runs")
  encode.add_argument("images", nargs="+", metavar="IMAGE",
                      help="image files, turned into the model's input as "
                      "its training did (the bundle's preprocessing)")
  return parser


def _encode(args):
  """Writes the outputs; raises the user errors `main` reports."""
  if args.first_counter is not None and args.format != "message":
    raise UserError("--first_counter needs --format=message")
  encoder = EdgeEncoder(args.bundle, int8=args.int8)
  if args.first_counter is not None and not encoder.codec.dithered:
    raise UserError("--first_counter is for dithered bundles; this one "
                    "sends no counter")
  try:
    preprocessing = imageio.Preprocessing.from_record(
        encoder.manifest.get(bundle.PREPROCESSING), encoder.image_shape,
        refusal="the bundle records no preprocessing (exported by an older "
        "tfvaeclf): export it again")
  except ValueError as e:
    raise BundleError(f"{args.bundle}: {e}") from None
  images = imageio.read_image_files(args.images, preprocessing)
  if args.format == "file":
    fileio.write_bytes(args.output, encoder.encode_file(images))
    return
  try:
    messages = encoder.encode_messages(images, args.first_counter)
  except ValueError as e:  # a counter out of range
    raise UserError(str(e)) from None
  for path, message in zip(fileio.numbered_paths(args.output, len(messages)),
                           messages):
    fileio.write_bytes(path, message)


def main(argv=None):
  args = _parser().parse_args(argv)
  if args.verbose:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
  try:
    _encode(args)
  except UserError as e:  # a bad bundle, image or flag
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
