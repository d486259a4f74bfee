"""Trains a model kind on a dataset into a self-describing model dir.

    python -m tfvaeclf.train --flagfile=configs/mnist_joint.flags \
        --model_dir=runs/mnist_joint

Checkpoints after every epoch; killed (even with kill -9) and rerun with the
same flags, it resumes from the last finished epoch. A NaN loss stops the run
with the last good checkpoint kept. At the end the entropy coder is frozen
into integer tables and the dir is stamped with the model's fingerprint.

`--strategy=mirrored` trains on every local GPU, `--strategy=multi_worker`
on every machine named in TF_CONFIG (see `tfvaeclf.distribute`).
`--batch_size` is per replica: a step takes batch_size x replicas images,
so a flagfile means the same work per device under any strategy.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import csv
import dataclasses
import json
import math
import os
import shutil
import sys
import time

from absl import flags, logging
import tensorflow as tf

from tfvaeclf import data, distribute, entropy, fileio, models
from tfvaeclf.models import split, vae
from tfvaeclf import model_dir as model_dir_lib

__all__ = ["TrainingDiverged", "dataset_from_flags", "model_config_from_flags",
           "run_training", "training_kwargs_from_flags"]

FLAGS = flags.FLAGS

flags.DEFINE_string("dataset", "mnist",
                    f"One of {', '.join(data.DATASET_NAMES)} or folder:PATH.")
flags.DEFINE_bool("download", False,
                  "Let TFDS download the dataset when it is not prepared.")
flags.DEFINE_integer("image_size", None, "Resize images to this size.")
flags.DEFINE_integer("validation_size", 5000,
                     "Examples carved from the end of train for validation.")
flags.DEFINE_integer("train_subset", None,
                     "Train on only the first N training examples.")
flags.DEFINE_integer("epochs", 5, "Epochs to train in total.")
flags.DEFINE_enum("augment", "none", data.AUGMENTATIONS,
                  "Random shifts (and flips) of training images.")
flags.DEFINE_float("learning_rate", 1e-3, "Adam learning rate.")
flags.DEFINE_enum("lr_schedule", "constant", ["constant", "cosine"],
                  "cosine: decay per epoch to 2% of --learning_rate.")
flags.DEFINE_integer("seed", 0, "Seed for weights and data order.")
flags.DEFINE_enum(
    "strategy", "default", distribute.STRATEGIES,
    "default: one device; mirrored: every local GPU; multi_worker: every "
    "worker in the TF_CONFIG environment variable. --batch_size is per "
    "replica: each step takes batch_size x replicas images.")

flags.DEFINE_enum("model", "joint", models.names(), "The model kind.")
flags.DEFINE_string(
    "freeze_encoder_from", None,
    "A finished model dir of the same kind: its encoder (and coder; a VAE's "
    "decoder too) is loaded and kept fixed while the rest trains.")

# Model settings. A flag left unset keeps the kind's own default; a flag the
# kind has no field for is ignored.
flags.DEFINE_enum("entropy_model", None, entropy.CODER_NAMES,
                  "How the latent is priced and range-coded.")
flags.DEFINE_float("lmbda", None, "Weight of the rate.")
flags.DEFINE_float("gamma", None, "joint: weight of the reconstruction MSE.")
flags.DEFINE_list("filters", None, "Conv widths of the encoder.")
flags.DEFINE_integer("kernel_size", None, "Conv kernel size of the encoder.")
flags.DEFINE_integer("latent_channels", None, "joint: channels of the latent.")
flags.DEFINE_list("classifier_units", None,
                  "joint: hidden widths of the latent classifier.")
flags.DEFINE_bool("decoder", None,
                  "joint: also train a light decoder for reconstructions.")
flags.DEFINE_float("beta", None, "VAEs: weight of the KL divergence.")
flags.DEFINE_float("quantization_step", None,
                   "VAEs: the coded latent is round(mean / step).")
flags.DEFINE_enum("classifier", None, vae.CLASSIFIER_HEADS,
                  "VAEs: the latent classifier head.")
flags.DEFINE_float("encoder_ce_weight", None,
                   "VAEs: share of the classifier's gradient that reaches "
                   "the encoder; 0 (the default) is seed 003's unsupervised "
                   "VAE.")
flags.DEFINE_integer("latent_dim", None, "beta_vae, rdc: latent dimensions.")
flags.DEFINE_bool("extra_conv", None,
                  "beta_vae: the seed's extra 3x3 stride-1 layer.")
flags.DEFINE_enum("version", None, ["v1", "v2"],
                  "grouped_vae: the seed's table.")
flags.DEFINE_float("lambda_cls", None,
                   "rdc: weight of the frozen classifier's cross-entropy "
                   "against the MSE.")
flags.DEFINE_integer("levels", None,
                     "rdc: quantization levels per latent entry (L).")
flags.DEFINE_integer("dither_seed", None,
                     "rdc: seed of the shared dither its files carry.")
flags.DEFINE_string("backbone", None,
                    "classifier and kinds built on one: small_resnet or "
                    "resnet50.")
flags.DEFINE_string("backbone_weights", None,
                    "classifier, split: a Keras .h5 weights file for the "
                    "backbone.")
flags.DEFINE_string(
    "backbone_from", None,
    "rdc, split: a finished classifier model dir whose backbone is copied "
    "and kept frozen (match --backbone and --backbone_widths to it).")
flags.DEFINE_list("backbone_widths", None,
                  "rdc, split: stage widths of a small_resnet backbone.")
flags.DEFINE_string("split_point", None,
                    "split: where the backbone is cut, S1, S2 or S3 (see "
                    "--list_split_points).")
flags.DEFINE_integer("compress_factor", None,
                     "split: latent channels = feature channels // this.")
flags.DEFINE_enum("bottleneck_mode", None, split.MODES,
                  "split: train on the labels, or without them on the "
                  "uncut network's predictions.")
flags.DEFINE_bool("list_split_points", False,
                  "Print the split points of --backbone, their layers and "
                  "feature shapes for --dataset's images, then exit.")


class TrainingDiverged(Exception):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


def model_config_from_flags(model_name, info, flag_values=FLAGS):
  """The kind's config: dataset facts plus every field a flag sets."""
  cls = models.get(model_name)
  values = {"image_shape": tuple(info.image_shape),
            "num_classes": info.num_classes}
  for field in dataclasses.fields(cls.Config):
    if (field.name in values or field.name not in flag_values
        or flag_values[field.name].value is None):
      continue
    value = flag_values[field.name].value
    if isinstance(value, list):
      value = tuple(int(v) for v in value)
    values[field.name] = value
  return cls.Config(**values)


class _EpochRecorder(tf.keras.callbacks.Callback):
  """Saves each finished epoch: its history.csv row, then its checkpoint.

  A row whose checkpoint never landed (a kill in between) is dropped on
  resume, so the history always matches the checkpoints. An epoch in which
  the loss went non-finite is not saved at all.
  """

  def __init__(self, manager, epoch, history_path):
    """`history_path` None: a non-chief worker, which only checkpoints."""
    super().__init__()
    self.manager, self.epoch, self.history_path = manager, epoch, history_path
    self.diverged_at = None

  def _rows(self):
    if not os.path.exists(self.history_path):
      return []
    with open(self.history_path, newline="") as f:
      return [row for row in csv.DictReader(f)
              if int(row["epoch"]) < int(self.epoch.numpy())]

  def on_epoch_begin(self, epoch, logs=None):
    self.started = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    if not math.isfinite(float(logs["loss"])):
      self.diverged_at = (int(self.epoch.numpy()) + 1, batch + 1)
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    if self.diverged_at is not None:
      return
    if self.history_path:
      rows = self._rows() + [{"epoch": epoch, **{
          key: f"{float(value):.6g}" for key, value in logs.items()},
          "seconds": f"{time.perf_counter() - self.started:.1f}"}]
      with fileio.atomic_writer(self.history_path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
        writer.writeheader()
        writer.writerows(rows)
    self.epoch.assign(epoch + 1)
    self.manager.save(checkpoint_number=epoch + 1)


def _learning_rate_callback(schedule, learning_rate, epochs):
  """Sets the rate at each epoch start, so a resumed run picks it up too."""
  if schedule == "constant":
    return []
  floor = 0.02 * learning_rate
  return [tf.keras.callbacks.LearningRateScheduler(
      lambda epoch: floor + (learning_rate - floor) * 0.5 * (
          1. + math.cos(math.pi * epoch / epochs)))]


def _check_same_run(directory, config):
  """Refuses to resume a dir that was started with other settings."""
  old = model_dir_lib.read_config(directory)
  config = json.loads(json.dumps(config))  # tuples -> lists, as on disk
  for key in ("model", "model_config", "dataset"):
    if old[key] != config[key]:
      raise cli.UserError(
          f"{directory} was started with a different {key} "
          f"({old[key]} vs {config[key]}); use a new --model_dir")


def run_training(directory, model_name, model_config, splits, dataset, *,
                 epochs, batch_size, learning_rate, seed, train_subset=None,
                 lr_schedule="constant", augment="none", pretrained_dir=None,
                 strategy=None, verbose=1):
  """Trains (or resumes) into `directory`; returns the model fingerprint.

  `splits` come from `data.load(**dataset)`; `dataset` is recorded so that
  evaluation can load the same data again. With `pretrained_dir`, the
  model's `PRETRAINED_PARTS` come from that finished model dir and stay
  fixed.

  `strategy` (default: the current one, usually none) is what the model,
  optimizer and checkpoint are created under; `batch_size` is per replica,
  so a step takes `batch_size * strategy.num_replicas_in_sync` images. On a
  multi-worker cluster every worker calls this with the same arguments
  (`directory` shared); only the chief writes it, the others return None.
  """
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  # Workers must checkpoint too (saving is collective), where nobody reads.
  scratch = None if chief else distribute.scratch_dir(strategy)
  try:
    return _train(directory, model_name, model_config, splits, dataset,
                  epochs=epochs, batch_size=batch_size,
                  learning_rate=learning_rate, seed=seed,
                  train_subset=train_subset, lr_schedule=lr_schedule,
                  augment=augment, pretrained_dir=pretrained_dir,
                  strategy=strategy, scratch=scratch, verbose=verbose)
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)


def _train(directory, model_name, model_config, splits, dataset, *, epochs,
           batch_size, learning_rate, seed, train_subset, lr_schedule,
           augment, pretrained_dir, strategy, scratch, verbose):
  """`run_training`; a non-chief worker writes only into `scratch`."""
  tf.keras.utils.set_random_seed(seed)
  with strategy.scope():  # every variable, so that each is distributed
    model = models.build(model_name, model_config)
    model.build_from_config()
    try:
      model_dir_lib.restore_backbone(model)
    except ValueError as e:
      raise cli.UserError(str(e)) from None
    pretrained = None
    if pretrained_dir:
      pretrained = {"dir": os.path.abspath(pretrained_dir),
                    "fingerprint": model_dir_lib.restore_pretrained(
                        model, pretrained_dir)}
      model.freeze_pretrained()
    optimizer = tf.keras.optimizers.Adam(learning_rate)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer)

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = model_dir_lib.training_checkpoint(model, optimizer, epoch)
    manager = model_dir_lib.checkpoint_manager(scratch or directory,
                                               checkpoint)
    # Every worker resumes from the chief's checkpoints.
    latest = tf.train.latest_checkpoint(
        os.path.join(directory, model_dir_lib.CHECKPOINT_DIR))
    if latest:
      _check_same_run(directory, {
          "model": model_name,
          "model_config": dataclasses.asdict(model_config),
          "dataset": dataset})
      status = checkpoint.restore(latest)
      status.assert_existing_objects_matched()
      logging.info("Resuming %s after epoch %d.", directory,
                   int(epoch.numpy()))
    elif not scratch:
      model_dir_lib.write_config(
          directory, model_name, model_config, dataset,
          splits.info.class_names,
          {"epochs": epochs, "batch_size": batch_size,
           "replicas": strategy.num_replicas_in_sync,
           "learning_rate": learning_rate, "lr_schedule": lr_schedule,
           "augment": augment, "seed": seed,
           "train_subset": train_subset, "data_source": splits.info.source,
           "pretrained": pretrained})

  initial_epoch = int(epoch.numpy())
  if initial_epoch < epochs:
    train = splits.train.take(train_subset) if train_subset else splits.train
    global_batch = batch_size * strategy.num_replicas_in_sync
    recorder = _EpochRecorder(
        manager, epoch,
        None if scratch else os.path.join(directory, "history.csv"))
    model.fit(
        distribute.shard_by_data(data.pipeline(
            train, global_batch, shuffle=True, seed=seed, augment=augment)),
        validation_data=distribute.shard_by_data(
            data.pipeline(splits.validation, global_batch)),
        epochs=epochs, initial_epoch=initial_epoch, verbose=verbose,
        callbacks=[  # the schedule first: it adds "lr" to the logs
            *_learning_rate_callback(lr_schedule, learning_rate, epochs),
            recorder,
            # Keras sends a non-chief's summaries to a temporary dir.
            tf.keras.callbacks.TensorBoard(os.path.join(directory, "logs")),
        ])
    if recorder.diverged_at is not None:
      last = int(epoch.numpy())
      raise TrainingDiverged(
          "loss became NaN at epoch {}, batch {}; kept the checkpoint of "
          "epoch {} in {}; lower --learning_rate or --lmbda and rerun".format(
              *recorder.diverged_at, last, directory))
  if scratch:
    return None
  # Frozen and stamped: a plain copy restored from the last checkpoint, as
  # `model_dir.load` will rebuild it. (Reading a multi-worker model's
  # variables would wait for the workers, which are gone by now.)
  final = model_dir_lib.build_model(model_dir_lib.read_config(directory))
  model_dir_lib.training_checkpoint(final).restore(
      manager.latest_checkpoint).expect_partial()
  return model_dir_lib.finalize(directory, final, manager.latest_checkpoint)


def dataset_from_flags(flag_values=FLAGS):
  """The `data.load` arguments the flags give, as a model dir records them."""
  return {"name": flag_values.dataset, "data_dir": flag_values.data_dir,
          "image_size": flag_values.image_size,
          "validation_size": flag_values.validation_size,
          "seed": flag_values.seed, "download": flag_values.download}


def training_kwargs_from_flags(flag_values=FLAGS):
  """The `run_training` settings the flags give."""
  return dict(
      epochs=flag_values.epochs, batch_size=flag_values.batch_size,
      learning_rate=flag_values.learning_rate, seed=flag_values.seed,
      train_subset=flag_values.train_subset,
      lr_schedule=flag_values.lr_schedule, augment=flag_values.augment,
      pretrained_dir=flag_values.freeze_encoder_from)


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.list_split_points:  # lists, trains nothing: no --model_dir
    try:
      info = data.load(**dataset_from_flags()).info
      print(split.split_point_table(model_config_from_flags("split", info)))
    except ValueError as e:
      raise cli.UserError(str(e)) from None
    return
  if not FLAGS.model_dir:
    raise cli.UserError("--model_dir is required")
  try:  # first: the runtime must not have started yet
    strategy = distribute.make_strategy(FLAGS.strategy)
  except distribute.ClusterConfigError as e:
    raise cli.UserError(str(e)) from None
  dataset = dataset_from_flags()
  try:
    splits = data.load(**dataset)
    model_config = model_config_from_flags(FLAGS.model, splits.info)
    models.build(FLAGS.model, model_config)  # validates the combination
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  try:
    fingerprint = run_training(
        FLAGS.model_dir, FLAGS.model, model_config, splits, dataset,
        **training_kwargs_from_flags(), strategy=strategy,
        verbose=1 if sys.stdout.isatty() else 2)
  except TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except KeyboardInterrupt:
    print(f"interrupted; rerun the same command to resume from the last "
          f"finished epoch in {FLAGS.model_dir}", file=sys.stderr)
    sys.exit(130)
  if fingerprint is None:
    print(f"trained {FLAGS.model} as a worker; the chief wrote "
          f"{FLAGS.model_dir}")
  else:
    print(f"trained {FLAGS.model} into {FLAGS.model_dir} "
          f"(fingerprint {fingerprint.hex()})")


if __name__ == "__main__":
  cli.run(main)
