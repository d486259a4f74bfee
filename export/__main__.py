"""python -m export --model_dir=DIR --out=BUNDLE [--calibration_examples=N] [--mcu]

Exports a trained model dir as a deployment bundle (see `export`); installed,
the command `tfvaeclf-export` runs the same. Errors a user can cause end with
one line on stderr and exit code 2.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

from absl import flags

from tfvaeclf import model_dir as model_dir_lib

from . import exporter

__all__ = ["main", "run"]

FLAGS = flags.FLAGS
flags.DEFINE_bool("mcu", False, "Also write BUNDLE/mcu/: C sources that run "
                  "the int8 encoder and the coder on a microcontroller.")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.model_dir or not FLAGS.out:
    raise cli.UserError("usage: python -m export --model_dir=DIR "
                        "--out=BUNDLE [--calibration_examples=N] [--mcu]")
  if FLAGS.calibration_examples < 1:
    raise cli.UserError("--calibration_examples must be at least 1")
  loaded = model_dir_lib.load(FLAGS.model_dir)
  calibration = exporter.calibration_images(
      loaded.config, FLAGS.calibration_examples, FLAGS.data_dir)
  exporter.export_bundle(loaded, FLAGS.out, calibration, FLAGS.mcu)
  print(f"exported {FLAGS.model_dir} (fingerprint "
        f"{loaded.fingerprint.hex()}) to {FLAGS.out}")


def run():
  """The command (`python -m export`, the console script `tfvaeclf-export`)."""
  cli.run(main)


if __name__ == "__main__":
  run()
