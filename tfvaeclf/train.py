"""Trains a model kind on a dataset into a self-describing model dir.

    python -m tfvaeclf.train --flagfile=configs/mnist_joint.flags \
        --model_dir=runs/mnist_joint

Flags given on the command line win over a flagfile's, whatever their
order. The flags are read once into a `specs.RunSpec`; a model flag that
the chosen `--model` kind does not use is an error, as is resuming a dir
with other training flags (more `--epochs` only continue it).

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

import dataclasses
import json
import math
import os
import shutil
import sys
import time

from absl import flags, logging
import tensorflow as tf

from tfvaeclf import data, distribute, models, specs
from tfvaeclf import model_dir as model_dir_lib

__all__ = ["TrainingDiverged", "run_training"]

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(specs)
for _name in specs.MODEL_FLAGS:
  flags.declare_key_flag(_name)
flags.DEFINE_bool("list_split_points", False,
                  "Print the split points of --backbone, their layers and "
                  "feature shapes for --dataset's images, then exit.")


class TrainingDiverged(Exception):
  """The loss became NaN or infinite; the last good checkpoint is kept."""


class _EpochRecorder(tf.keras.callbacks.Callback):
  """Saves each finished epoch: its history.csv row, then its checkpoint.

  A row whose checkpoint never landed (a kill in between) is dropped on
  resume, so the history always matches the checkpoints. An epoch in which
  the loss went non-finite is not saved at all, and ends the training.

  The loss is watched on the device: reading it after every batch would
  wait for each step to finish (Keras warns that the callback is slow), so
  the first non-finite batch is only noted there and read at the epoch end.
  """

  def __init__(self, manager, epoch, layout):
    """`layout` (a `ModelDir`) None: a non-chief worker, which only
    checkpoints."""
    super().__init__()
    self.manager, self.epoch, self.layout = manager, epoch, layout
    self._supports_tf_logs = True  # the batch logs stay tensors
    self.diverged_at = None
    # Batches of this epoch so far, and the first non-finite one (0: none).
    self._batches = tf.Variable(0, dtype=tf.int64, trainable=False)
    self._first_bad = tf.Variable(0, dtype=tf.int64, trainable=False)

  def _rows(self):
    return [row for row in self.layout.history()
            if int(row["epoch"]) < int(self.epoch.numpy())]

  def on_epoch_begin(self, epoch, logs=None):
    self.started = time.perf_counter()
    self._batches.assign(0)
    self._first_bad.assign(0)

  def on_train_batch_end(self, batch, logs=None):
    # A few eager ops, not a tf.function: a sweep's every model would trace
    # it again, and TensorFlow warns of retracing.
    self._batches.assign_add(1)
    self._first_bad.assign(tf.where(
        (self._first_bad == 0) & ~tf.math.is_finite(logs["loss"]),
        self._batches, self._first_bad))

  def on_epoch_end(self, epoch, logs=None):
    first_bad = int(self._first_bad.numpy())
    if first_bad:
      self.diverged_at = (epoch + 1, first_bad)
      self.model.stop_training = True
      return
    if self.layout:
      self.layout.write_history(self._rows() + [{"epoch": epoch, **{
          key: f"{float(value):.6g}" for key, value in logs.items()},
          "seconds": f"{time.perf_counter() - self.started:.1f}"}])
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


def _optimizer(settings):
  """Adam (AdamW with --weight_decay) or Nesterov SGD. Weight decay is
  scaled by the learning rate (so it follows the schedule) and spares
  biases and batch norm."""
  decay = settings.weight_decay or None
  if settings.optimizer == "sgd":
    optimizer = tf.keras.optimizers.SGD(settings.learning_rate, momentum=0.9,
                                        nesterov=True, weight_decay=decay)
  elif decay:
    optimizer = tf.keras.optimizers.AdamW(settings.learning_rate,
                                          weight_decay=decay)
  else:
    return tf.keras.optimizers.Adam(settings.learning_rate)
  if decay:
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
  return optimizer


# Training settings a resumed run must share with the run that started the
# dir (more --epochs, or another strategy, only continue it).
_RESUME_KEYS = {"batch_size": "batch_size", "optimizer": "optimizer",
                "learning_rate": "learning_rate",
                "weight_decay": "weight_decay",
                "lr_schedule": "lr_schedule", "augment": "augment",
                "precision": "precision",
                "seed": "seed", "train_subset": "train_subset",
                "pretrained": "freeze_encoder_from"}


def _differences(old, new, names=None):
  """"name old, now new" for each key of `names` (default: all) whose
  value differs; keys `old` lacks (older dirs) are not compared."""
  names = names or {key: key for key in sorted(set(old) | set(new))}
  return [f"{name} {old[key]}, now {new.get(key)}"
          for key, name in names.items()
          if key in old and old[key] != new.get(key)]


def _check_same_run(directory, config):
  """Refuses to resume a dir that was started with other settings, naming
  the settings that differ."""
  old = model_dir_lib.read_config(directory)
  config = json.loads(json.dumps(config))  # tuples -> lists, as on disk
  if old["model"] != config["model"]:
    raise cli.UserError(
        f"{directory} was started with a different model ({old['model']}, "
        f"now {config['model']}); use a new --model_dir")
  for key in ("model_config", "dataset"):
    changed = _differences(old[key], config[key])
    if changed:
      raise cli.UserError(
          f"{directory} was started with a different {key} "
          f"({'; '.join(changed)}); use a new --model_dir")
  changed = _differences(old["training"], config["training"], {
      key: f"--{flag}" for key, flag in _RESUME_KEYS.items()})
  if changed:
    raise cli.UserError(
        f"{directory} was trained with other training flags "
        f"({'; '.join(changed)}); resume it with its own or use a new "
        "--model_dir")


def run_training(run, splits, *, strategy=None, verbose=1):
  """Trains (or resumes) `run` (a `specs.RunSpec`) into its `model_dir`;
  returns the model fingerprint.

  `splits` come from `data.load(**dataclasses.asdict(run.data))`; the data
  spec is recorded so that evaluation can load the same data again. With
  `run.train.freeze_encoder_from`, the model's `PRETRAINED_PARTS` come from
  that finished model dir and stay fixed.

  `strategy` (default: the current one, usually none) is what the model,
  optimizer and checkpoint are created under; `run.train.batch_size` is per
  replica, so a step takes `batch_size * strategy.num_replicas_in_sync`
  images. On a multi-worker cluster every worker calls this with the same
  arguments (`model_dir` shared); only the chief writes it, the others
  return None.
  """
  strategy = strategy or tf.distribute.get_strategy()
  chief = distribute.is_chief(strategy)
  # Workers must checkpoint too (saving is collective), where nobody reads.
  scratch = None if chief else distribute.scratch_dir(strategy)
  try:
    return _train(run, splits, strategy=strategy, scratch=scratch,
                  verbose=verbose)
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)


def _train(run, splits, *, strategy, scratch, verbose):
  """`run_training`; a non-chief worker writes only into `scratch`."""
  directory, model_name, model_config = (run.model_dir, run.model_name,
                                         run.model)
  settings, dataset = run.train, dataclasses.asdict(run.data)
  if settings.precision != "float32" and model_name != "classifier":
    raise cli.UserError(
        f"--precision={settings.precision} trains a classifier only; "
        f"{model_name}'s coder needs float32")
  layout = model_dir_lib.ModelDir(directory)
  tf.keras.utils.set_random_seed(settings.seed)
  with strategy.scope():  # every variable, so that each is distributed
    model = models.build(model_name, model_config, settings.precision)
    model.build_from_config()
    try:
      model_dir_lib.restore_backbone(model)
    except ValueError as e:
      raise cli.UserError(str(e)) from None
    pretrained = None
    if settings.freeze_encoder_from:
      pretrained = {"dir": os.path.abspath(settings.freeze_encoder_from),
                    "fingerprint": model_dir_lib.restore_pretrained(
                        model, settings.freeze_encoder_from)}
      model.freeze_pretrained()
    optimizer = _optimizer(settings)
    optimizer.build(model.trainable_variables)
    model.compile(optimizer=optimizer)

    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    checkpoint = model_dir_lib.training_checkpoint(model, optimizer, epoch)
    manager = model_dir_lib.checkpoint_manager(scratch or directory,
                                               checkpoint)
    training = {"epochs": settings.epochs,
                "batch_size": settings.batch_size,
                "replicas": strategy.num_replicas_in_sync,
                "optimizer": settings.optimizer,
                "learning_rate": settings.learning_rate,
                "weight_decay": settings.weight_decay,
                "lr_schedule": settings.lr_schedule,
                "augment": settings.augment, "seed": settings.seed,
                "precision": settings.precision,
                "train_subset": settings.train_subset,
                "data_source": splits.info.source, "pretrained": pretrained}
    # Every worker resumes from the chief's checkpoints.
    latest = tf.train.latest_checkpoint(layout.checkpoint_dir)
    if latest:
      _check_same_run(directory, {
          "model": model_name,
          "model_config": dataclasses.asdict(model_config),
          "dataset": dataset, "training": training})
      status = checkpoint.restore(latest)
      status.assert_existing_objects_matched()
      logging.info("Resuming %s after epoch %d.", directory,
                   int(epoch.numpy()))
    elif not scratch:
      model_dir_lib.write_config(directory, model_name, model_config,
                                 dataset, splits.info.class_names, training,
                                 splits.info.preprocessing)

  initial_epoch = int(epoch.numpy())
  epochs, batch_size = settings.epochs, settings.batch_size
  if initial_epoch < epochs:
    train = splits.train
    if settings.train_subset:
      train = train.take(settings.train_subset)
      total = splits.sizes["train"]  # None: a stream of unknown length
      logging.info("training on %s (--train_subset)", (
          f"the first {settings.train_subset} training images" if total is None
          else f"{min(settings.train_subset, total)} of the {total} training "
          "images"))
    global_batch = batch_size * strategy.num_replicas_in_sync
    recorder = _EpochRecorder(manager, epoch, None if scratch else layout)
    model.fit(
        distribute.shard_by_data(data.pipeline(
            train, global_batch, shuffle=True, seed=settings.seed,
            augment=settings.augment)),
        validation_data=distribute.shard_by_data(
            data.pipeline(splits.validation, global_batch)),
        epochs=epochs, initial_epoch=initial_epoch, verbose=verbose,
        callbacks=[  # the schedule first: it adds "lr" to the logs
            *_learning_rate_callback(settings.lr_schedule,
                                     settings.learning_rate, epochs),
            recorder,
            # Keras sends a non-chief's summaries to a temporary dir. No
            # graph: writing it in the first batch makes Keras warn that
            # the callbacks are slow.
            tf.keras.callbacks.TensorBoard(layout.logs_dir,
                                           write_graph=False),
        ])
    if recorder.diverged_at is not None:
      last = int(epoch.numpy())
      kept = (f"kept the checkpoint of epoch {last} in {directory}" if last
              else f"no epoch finished, so {directory} holds no checkpoint")
      raise TrainingDiverged(
          "loss became NaN at epoch {}, batch {}; {}; lower "
          "--learning_rate or the rate weight and rerun".format(
              *recorder.diverged_at, kept))
  if scratch:
    return None
  config = model_dir_lib.read_config(directory)
  if epochs > config["training"]["epochs"]:  # resumed to train further
    model_dir_lib.write_config(
        directory, model_name, model_config, dataset,
        splits.info.class_names, {**config["training"], "epochs": epochs},
        splits.info.preprocessing)
  # Frozen and stamped: a plain copy restored from the last checkpoint, as
  # `model_dir.load` will rebuild it. (Reading a multi-worker model's
  # variables would wait for the workers, which are gone by now.)
  final = model_dir_lib.build_model(model_dir_lib.read_config(directory))
  model_dir_lib.training_checkpoint(final).restore(
      manager.latest_checkpoint).expect_partial()
  return model_dir_lib.finalize(directory, final, manager.latest_checkpoint)


def _cut_kind(model_name):
  """The kind `--list_split_points` lists: `model_name` if it is cut from a
  backbone (it has a `split_point_table`), else the first kind that is."""
  kinds = [name for name in models.names()
           if models.get(name).split_point_table]
  return model_name if model_name in kinds else kinds[0]


def _split_point_table(run):
  """Where `run`'s kind can be cut, for its dataset's images."""
  try:
    info = data.load(**dataclasses.asdict(run.data)).info
    return models.get(run.model_name).split_point_table(
        run.with_data(info).model)
  except ValueError as e:
    raise cli.UserError(str(e)) from None


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.list_split_points:  # lists, trains nothing: no --model_dir
    print(_split_point_table(specs.from_flags(FLAGS,
                                              _cut_kind(FLAGS.model))))
    return
  if not FLAGS.model_dir:
    raise cli.UserError("--model_dir is required")
  run = specs.from_flags(FLAGS)
  try:  # first: the runtime must not have started yet
    strategy = distribute.make_strategy(run.train.strategy)
  except distribute.ClusterConfigError as e:
    raise cli.UserError(str(e)) from None
  try:
    splits = data.load(**dataclasses.asdict(run.data))
    run = run.with_data(splits.info)
    models.build(run.model_name, run.model)  # validates the combination
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  try:
    fingerprint = run_training(run, splits, strategy=strategy,
                               verbose=1 if sys.stdout.isatty() else 2)
  except TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3)
  except KeyboardInterrupt:
    print(f"interrupted; rerun the same command to resume from the last "
          f"finished epoch in {run.model_dir}", file=sys.stderr)
    sys.exit(130)
  if fingerprint is None:
    print(f"trained {run.model_name} as a worker; the chief wrote "
          f"{run.model_dir}")
  else:
    print(f"trained {run.model_name} into {run.model_dir} "
          f"(fingerprint {fingerprint.hex()})")


if __name__ == "__main__":
  cli.run(main, argv=specs.flagfiles_first(sys.argv))
