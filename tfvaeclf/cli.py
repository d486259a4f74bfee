"""What every command-line entry point shares.

Import this first in an entry point: it quiets TensorFlow's C++ start-up
chatter before TensorFlow loads, so stderr carries only what the user needs,
and `run` turns the errors a user can cause (`tfvaeclf.errors`) into one
line and exit code 2. It imports nothing else of tfvaeclf, so a command
loads only what it uses.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import logging  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402

from tfvaeclf.errors import UserError  # noqa: E402

__all__ = ["UserError", "run"]

# Flags read by more than one entry point are defined once, here.
flags.DEFINE_string("model_dir", None, "The model dir to write or read.")
flags.DEFINE_string("data_dir", None,
                    "Where datasets live (TFDS data dir and offline copies).")
flags.DEFINE_integer("batch_size", 64,
                     "Images per batch (per replica under --strategy).")
flags.DEFINE_string("out", None, "The file or dir to write.")
flags.DEFINE_integer("calibration_examples", 500,
                     "Training images that calibrate the int8 encoder.")
flags.DEFINE_integer("max_images", None,
                     "Most images a file or payload may hold: a larger one "
                     "is refused before any is decoded, bounding the work "
                     "bytes from outside can ask for (default: the "
                     "server's cap, 256, `bitstream.MAX_IMAGES`).")


# This package's and the exporter's source dirs: their INFO lines are
# progress for the user; other libraries' (TensorFlow's "Writing fingerprint
# to ...") are not.
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_OUR_DIRS = (_PACKAGE_DIR + os.sep,
             os.path.join(os.path.dirname(_PACKAGE_DIR), "export") + os.sep)


def _ours_or_warning(record):
  """Logs INFO only from our code, warnings and errors from everyone."""
  return (record.levelno >= logging.WARNING
          or record.pathname.startswith(_OUR_DIRS))


def _not_retracing(record):
  """Drops TensorFlow's warning that a function was traced again: in a
  command that builds one model after another, each new model traces its
  functions once, and that is not the waste the warning is about."""
  return "triggered tf.function retracing" not in record.getMessage()


def _quiet_logs(many_models):
  """Every log line once, and no library chatter.

  TensorFlow's Python logger, loaded before absl's handler exists, adds a
  handler of its own: each of its lines would print twice. Its lines go
  through absl's handler alone, which drops other libraries' INFO lines.
  """
  tf_logger = logging.getLogger("tensorflow")
  for handler in list(tf_logger.handlers):
    tf_logger.removeHandler(handler)
  absl_logging.get_absl_handler().addFilter(_ours_or_warning)
  if many_models:
    absl_logging.get_absl_handler().addFilter(_not_retracing)


def run(main, argv=None, many_models=False):
  """`absl.app.run(main)`, reporting user errors in one line (exit code 2).

  `many_models`: the command trains or evaluates one model after another
  (sweeps, search), so TensorFlow's retracing warnings are false alarms.
  """
  def guarded(argv):
    _quiet_logs(many_models)
    try:
      return main(argv)
    except UserError as e:
      message = " ".join(str(e).split())
      print(f"error: {message}", file=sys.stderr)
      sys.exit(2)
  app.run(guarded, argv=argv)
