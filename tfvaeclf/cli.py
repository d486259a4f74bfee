"""What every command-line entry point shares.

Import this first in an entry point: it quiets TensorFlow's C++ start-up
chatter before TensorFlow loads, so stderr carries only what the user needs,
and `run` turns the errors a user can cause (`tfvaeclf.errors`) into one
line and exit code 2. It imports nothing else of tfvaeclf, so a command
loads only what it uses.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import sys  # noqa: E402

from absl import app, flags  # noqa: E402

from tfvaeclf.errors import UserError  # noqa: E402

__all__ = ["UserError", "run"]

# Flags read by more than one entry point are defined once, here.
flags.DEFINE_string("model_dir", None, "The model dir to write or read.")
flags.DEFINE_string("data_dir", None,
                    "Where datasets live (TFDS data dir and offline copies).")
flags.DEFINE_integer("batch_size", 64,
                     "Images per batch (per replica under --strategy).")
flags.DEFINE_string("out", None, "The file or dir to write.")


def run(main, argv=None):
  """`absl.app.run(main)`, reporting user errors in one line (exit code 2)."""
  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:
      message = " ".join(str(e).split())
      print(f"error: {message}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded, argv=argv)
