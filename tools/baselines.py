"""Rate table of the classical codecs on a dataset's test images.

    python tools/baselines.py --dataset=mnist --max_examples=200 \
        --codecs=jpeg,webp,hevc,av1,jpeg2000 --out=runs/baselines_mnist.csv

One row per codec and quality: bytes per image (whole file and payload
only, see tfvaeclf/baselines.py), bits per pixel both ways, and PSNR.
ffmpeg codecs start two processes per image (~0.2 s): keep
--max_examples modest.
"""

import csv
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402
import numpy as np  # noqa: E402
import tqdm  # noqa: E402

from tfvaeclf import baselines, cli, data, fileio  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist", "Dataset whose test images to code.")
flags.DEFINE_integer("max_examples", 200, "Test images to code.")
flags.DEFINE_list("codecs", list(baselines.CODECS), "Codecs to measure.")


def main(argv):
  del argv
  unknown = set(FLAGS.codecs) - set(baselines.CODECS)
  if unknown:
    raise cli.UserError(f"unknown codecs {sorted(unknown)}; choose from "
                        f"{', '.join(baselines.CODECS)}")
  splits = data.load(FLAGS.dataset, data_dir=FLAGS.data_dir)
  images = np.stack([x for x, _ in splits.test.take(
      FLAGS.max_examples).as_numpy_iterator()])
  work = [(name, q) for name in FLAGS.codecs
          for q in baselines.CODECS[name].qualities]
  rows = [baselines.measure(baselines.CODECS[name], images, quality)
          for name, quality in tqdm.tqdm(work, desc="codecs", unit="setting")]
  with fileio.atomic_writer(FLAGS.out, "w") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  for row in rows:
    print(f"{row['codec']:<9} q={row['quality']:<3} "
          f"{row['bytes_per_image']:8.1f} B  payload "
          f"{row['payload_bytes_per_image']:7.1f} B  {row['psnr']:5.1f} dB")


if __name__ == "__main__":
  flags.mark_flag_as_required("out")
  cli.run(main)
