"""Codes images into a tfvaeclf file on the board, without TensorFlow.

    python -m tfvaeclf.edge encode --bundle=BUNDLE [--int8] --output=FILE \
        IMAGE...

The file is the one `python -m tfvaeclf.codec classify --model_dir=DIR FILE`
(or the bundle's server SavedModel) reads. Bad bundles and images end with
one line on stderr and exit code 2. Only numpy, Pillow and a TFLite runtime
are imported (TensorFlow only if no runtime is installed, see `interpreter`).
"""

import argparse
import sys

from tfvaeclf import fileio, imageio
from tfvaeclf.edge import bundle
from tfvaeclf.edge.encoder import EdgeEncoder

__all__ = ["main"]


def _parser():
  parser = argparse.ArgumentParser(
      prog="python -m tfvaeclf.edge",
      description="Compress images with an exported bundle's encoder.")
  commands = parser.add_subparsers(dest="command", required=True)
  encode = commands.add_parser("encode", help="images -> a tfvaeclf file")
  encode.add_argument("--bundle", required=True,
                      help="the bundle dir written by python -m export")
  encode.add_argument("--int8", action="store_true",
                      help="use the full-integer encoder")
  encode.add_argument("--output", required=True, help="the file to write")
  encode.add_argument("images", nargs="+", metavar="IMAGE",
                      help="image files of the model's size and mode")
  return parser


def main(argv=None):
  args = _parser().parse_args(argv)
  try:
    encoder = EdgeEncoder(args.bundle, int8=args.int8)
    images = imageio.read_image_files(args.images, encoder.image_shape)
    fileio.write_bytes(args.output, encoder.encode_file(images))
  except (bundle.BundleError, imageio.ImageFileError) as e:
    print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
