#!/usr/bin/env python3
"""Rate table of the classical codecs on a dataset's test images.

    python tools/baselines.py --dataset=mnist --max_examples=200 \
        --codecs=jpeg,webp,hevc,av1,jpeg2000 --out=runs/baselines_mnist.csv

One row per codec and quality: the dataset, bytes per image (whole file and
payload only, see tfvaeclf/baselines.py), bits per pixel both ways, and
PSNR.

With --classifier_dir (a model dir of the `classifier` kind, trained on the
same dataset, which then defaults to the classifier's), each row also has
`accuracy`: the fraction of the decoded test images that classifier gets
right. With --finetune_epochs=N, also `finetuned_accuracy`: a copy of the
classifier trained N more epochs on --finetune_examples training images
coded at that quality (coded once, kept in memory), scored on the same
decoded test images. tfvaeclf.experiments.report reads both columns.

Cost: hevc and jpeg2000 start two ffmpeg processes per image, ~0.2 s of
one core, so every setting costs that per test image and, when
fine-tuning, per training image too: 2000 training images are ~7 core-
minutes a setting (images are coded on every core). Keep --max_examples and
--finetune_examples modest for them, or pick a few --qualities per codec
(hevc:45:35). AV1 codes 250 images a run (~2 ms an image); Pillow's JPEG
and WebP take well under a millisecond an image.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import csv

from absl import flags
import numpy as np
import tensorflow as tf
import tqdm

from tfvaeclf import baselines, data, fileio
from tfvaeclf import model_dir as model_dir_lib
from tfvaeclf.experiments import points as points_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "mnist",
                    "Dataset whose test images to code (default with "
                    "--classifier_dir: the classifier's).")
flags.DEFINE_string("dataset_from", None,
                    "A model dir: code its test images as it reads them "
                    "(its dataset, size, fit and channels), e.g. the "
                    "grouped VAE's Fashion-MNIST padded to 32x32x3.")
flags.DEFINE_integer("max_examples", 200, "Test images to code.")
flags.DEFINE_list("codecs", list(baselines.CODECS), "Codecs to measure.")
flags.DEFINE_list("qualities", None,
                  "Measure only these qualities (default: each codec's "
                  "sweep, see tfvaeclf/baselines.py): integers for every "
                  "codec, or CODEC:Q:Q... for one, e.g. av1:63:55,hevc:45.")
flags.DEFINE_string("classifier_dir", None,
                    "A `classifier` model dir: adds its accuracy on the "
                    "decoded test images.")
flags.DEFINE_integer("finetune_epochs", 0,
                     "With --classifier_dir: also fine-tune a copy on "
                     "training images coded at each quality, this long.")
flags.DEFINE_integer("finetune_examples", 2000,
                     "Training images to code and fine-tune on.")
flags.DEFINE_float("finetune_learning_rate", 1e-4,
                   "Adam learning rate of the fine-tuning.")


def _images_and_labels(dataset, count):
  pairs = list(dataset.take(count).as_numpy_iterator())
  return (np.stack([x for x, _ in pairs]),
          np.array([y for _, y in pairs], np.int64))


def accuracy(model, images, labels, batch_size=256):
  """The fraction of uint8 `images` that `model.classify` gets right."""
  correct = 0
  for start in range(0, len(images), batch_size):
    logits = model.classify(data.to_float(images[start:start + batch_size]),
                            training=False)
    correct += int(np.sum(np.argmax(logits, -1) ==
                          labels[start:start + batch_size]))
  return correct / len(images)


def finetune(loaded, images, labels, *, epochs, batch_size, learning_rate,
             seed=0):
  """A copy of the classifier in `loaded` trained `epochs` more epochs on
  uint8 `images`, with the augmentation and precision it was trained with
  (bfloat16 layers halve the time); the copy returned runs in float32."""
  tf.keras.utils.set_random_seed(seed)
  training = loaded.config["training"]
  model = model_dir_lib.build_model(
      loaded.config, training.get("precision", "float32"))
  model.set_weights(loaded.model.get_weights())
  model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate))
  train = tf.data.Dataset.from_tensor_slices((images, labels))
  model.fit(data.pipeline(
      train, batch_size, shuffle=True, seed=seed,
      augment=training.get("augment", "none")),
      epochs=epochs, verbose=0)
  tuned = model_dir_lib.build_model(loaded.config)
  tuned.set_weights(model.get_weights())
  return tuned


def parse_qualities(values, codec_names):
  """--qualities -> {codec: qualities}: plain integers apply to every codec,
  CODEC:Q:Q... to that codec alone, the rest keep their own sweeps."""
  everywhere, per_codec = [], {}
  for value in values:
    name, *numbers = value.split(":") if ":" in value else (None, value)
    if name is not None and name not in codec_names:
      raise cli.UserError(f"--qualities={value}: {name!r} is not one of "
                          f"--codecs ({','.join(codec_names)})")
    try:
      numbers = [int(n) for n in numbers]
    except ValueError:
      raise cli.UserError(f"--qualities={value}: qualities must be "
                          f"integers") from None
    if name is None:
      everywhere += numbers
    else:
      per_codec.setdefault(name, []).extend(numbers)
  return {name: per_codec.get(name) or everywhere
          or list(baselines.CODECS[name].qualities) for name in codec_names}


def _load_data():
  """(dataset name, splits, the loaded classifier or None)."""
  if FLAGS.classifier_dir and FLAGS.dataset_from:
    raise cli.UserError("give --classifier_dir or --dataset_from, not both "
                        "(the classifier's images are its dataset's)")
  source = FLAGS.classifier_dir or FLAGS.dataset_from
  if not source:
    return FLAGS.dataset, data.load(FLAGS.dataset,
                                    data_dir=FLAGS.data_dir), None
  args = dict(model_dir_lib.read_config(source)["dataset"], download=False)
  if FLAGS["dataset"].present and FLAGS.dataset != args["name"]:
    raise cli.UserError(
        f"--dataset={FLAGS.dataset}, but the model in {source} was trained "
        f"on {args['name']}")
  loaded = (model_dir_lib.load_classifier(FLAGS.classifier_dir)
            if FLAGS.classifier_dir else None)
  if FLAGS.data_dir:
    args["data_dir"] = FLAGS.data_dir
  return args["name"], data.load(**args), loaded


def _scorer(loaded, codec, quality, test_labels, train):
  """`score(decoded test images)` for one setting: accuracy, and the
  fine-tuned copy's accuracy when `train` (images, labels) is given."""
  def score(decoded):
    columns = {"accuracy": accuracy(loaded.model, decoded, test_labels)}
    if train is not None:
      _, coded = baselines.code_images(codec, train[0], quality,
                                       progress=True)
      tuned = finetune(loaded, coded, train[1],
                       epochs=FLAGS.finetune_epochs,
                       batch_size=FLAGS.batch_size,
                       learning_rate=FLAGS.finetune_learning_rate)
      columns["finetuned_accuracy"] = accuracy(tuned, decoded, test_labels)
    return columns
  return score if loaded else None


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.out:
    raise cli.UserError("--out is required")
  unknown = set(FLAGS.codecs) - set(baselines.CODECS)
  if unknown:
    raise cli.UserError(f"unknown codecs {sorted(unknown)}; choose from "
                        f"{', '.join(baselines.CODECS)}")
  if FLAGS.finetune_epochs and not FLAGS.classifier_dir:
    raise cli.UserError("--finetune_epochs needs --classifier_dir")
  qualities = parse_qualities(FLAGS.qualities or [], FLAGS.codecs)
  name, splits, loaded = _load_data()
  images, labels = _images_and_labels(splits.test, FLAGS.max_examples)
  train = None
  if loaded:
    print(f"{name}: the classifier gets "
          f"{accuracy(loaded.model, images, labels):.2%} of the "
          f"{len(images)} uncoded test images (the report's --reference)")
    if FLAGS.finetune_epochs > 0:
      train = _images_and_labels(splits.train, FLAGS.finetune_examples)
  work = [(codec, q) for codec in FLAGS.codecs for q in qualities[codec]]
  rows = []
  for codec_name, quality in tqdm.tqdm(work, desc="codecs", unit="setting"):
    codec = baselines.CODECS[codec_name]
    rows.append({"dataset": name, "data_source": splits.info.source,
                 **baselines.measure(
                     codec, images, quality,
                     score=_scorer(loaded, codec, quality, labels, train),
                     progress=True)})
  with fileio.atomic_writer(FLAGS.out, "w") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  for row in rows:
    accuracies = "".join(
        f"  {label} {row[key]:6.2%}"
        for key, label in (("accuracy", "accuracy"),
                           ("finetuned_accuracy", "fine-tuned"))
        if key in row)
    setting = points_lib.setting_name(row["codec"], row["quality"])
    print(f"{row['codec']:<9} {setting:<18}"
          f"{row['bytes_per_image']:8.1f} B  payload "
          f"{row['payload_bytes_per_image']:7.1f} B  {row['psnr']:5.1f} dB"
          f"{accuracies}")


if __name__ == "__main__":
  cli.run(main)
