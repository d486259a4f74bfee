"""The models a model dir holds: built, finished and loaded for inference.

Where each file lives is `ModelDir`'s alone (`tfvaeclf.layout`, re-exported
here); this module adds what needs TensorFlow: everything evaluate, codec
and export need, and nothing else.

An uncompressed classifier (the `classifier` kind, whose `coder` is None)
has no tables. `load` returns it only when asked (`allow_uncompressed`):
everything that codes images (the codec, export) needs a coder, and so
refuses such a dir in one line without checking for it.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfvaeclf import data, fileio, models
from tfvaeclf.coding import codec_spec
from tfvaeclf.errors import ModelDirError
from tfvaeclf.layout import ModelDir

__all__ = ["ModelDir", "ModelDirError", "LoadedModel", "write_config",
           "read_config", "preprocessing_of", "build_model",
           "training_checkpoint", "checkpoint_manager", "finalize", "load",
           "load_classifier", "restore_pretrained", "restore_backbone"]

@dataclasses.dataclass(frozen=True)
class LoadedModel:
  model: tf.keras.Model
  fingerprint: bytes
  config: dict  # the contents of config.json
  codec: codec_spec.CodecSpec = None  # what its files hold; None: no coder
  # How a file becomes its input (`imageio.Preprocessing`).
  preprocessing: data.Preprocessing = None


def write_config(model_dir, model_name, model_config, dataset, class_names,
                 training, preprocessing=None):
  """Writes config.json; `preprocessing`: the loaded dataset's
  `info.preprocessing`, how training turned files into inputs."""
  config = {
      "model": model_name,
      "model_config": dataclasses.asdict(model_config),
      "dataset": dataset,
      "class_names": list(class_names),
      "training": training,
  }
  if preprocessing is not None:
    config[ModelDir.PREPROCESSING] = preprocessing.record()
  ModelDir(model_dir).write_config(config)


def read_config(model_dir):
  return ModelDir(model_dir).config


def preprocessing_of(config):
  """The `Preprocessing` a model dir's config records; a dir from before
  records gets its dataset's (`data.preprocessing_of`). ModelDirError if
  the record does not fit the model."""
  image_shape = config["model_config"]["image_shape"]
  record = config.get(ModelDir.PREPROCESSING)
  if record is None:
    return data.preprocessing_of(config["dataset"], image_shape)
  try:
    return data.Preprocessing.from_record(record, image_shape)
  except ValueError as e:
    raise ModelDirError(f"config.json: {e}") from None


def build_model(config, precision="float32"):
  """A model with all variables created, from the contents of config.json,
  its layers computing in `precision` (a Keras dtype policy).

  Its weights are random until a checkpoint is restored: building reads no
  file, not even the backbone training started from.
  """
  model = models.build(config["model"], config["model_config"], precision)
  model.build_from_config()
  return model


def training_checkpoint(model, optimizer=None, epoch=None):
  """The object graph saved every epoch; `model` alone restores for use."""
  parts = {"model": model}
  if optimizer is not None:
    parts["optimizer"] = optimizer
  if epoch is not None:
    parts["epoch"] = epoch
  return tf.train.Checkpoint(**parts)


def checkpoint_manager(model_dir, checkpoint):
  return tf.train.CheckpointManager(
      checkpoint, ModelDir(model_dir).checkpoint_dir, max_to_keep=3)


def _fingerprint(config, tables, model):
  """8 bytes that change whenever the weights, tables or config do."""
  return codec_spec.fingerprint_of(config, tables, model.weights)


def finalize(model_dir, model, checkpoint_path):
  """Freezes the coder, saves its tables and stamps the fingerprint (of the
  config and weights alone, for a model without a coder)."""
  directory = ModelDir(model_dir)
  tables = {}
  if model.coder is not None:
    model.coder.freeze()
    tables = model.coder.tables()
    with fileio.atomic_writer(directory.tables_path) as f:
      np.savez(f, **tables)
  fingerprint = _fingerprint(directory.config, tables, model)
  directory.write_summary(fingerprint, checkpoint_path)
  return fingerprint


def load(model_dir, allow_uncompressed=False):
  """Rebuilds a finished model for inference; ModelDirError if it can't.

  A model without a coder (an uncompressed classifier) is refused unless
  `allow_uncompressed`: the caller must not need `compress`/`decompress`.
  """
  directory = ModelDir(model_dir)
  config = directory.config
  summary = directory.summary
  model = build_model(config)
  if model.coder is None and not allow_uncompressed:
    raise ModelDirError(
        f"{model_dir} holds an uncompressed {config['model']} model: it has "
        "no coder, so it cannot compress images, be exported or lend an "
        "encoder; python -m tfvaeclf.evaluate and tools/baselines.py "
        "--classifier_dir read it")
  tables = {}
  try:
    training_checkpoint(model).restore(
        directory.final_checkpoint).expect_partial()
    if model.coder is not None:
      with np.load(directory.tables_path) as npz:
        tables = {name: npz[name] for name in npz.files}
  except (tf.errors.OpError, OSError, ValueError) as e:
    raise ModelDirError(
        f"cannot read the model in {model_dir}: {str(e).splitlines()[0]}"
    ) from None
  if model.coder is not None:
    model.coder.load_tables(tables)
  fingerprint = _fingerprint(config, tables, model)
  if fingerprint.hex() != summary["fingerprint"]:
    raise ModelDirError(
        f"{model_dir} is inconsistent: its weights or tables changed after "
        "training (fingerprint mismatch)")
  codec = (None if model.coder is None
           else codec_spec.CodecSpec.from_model(model))
  return LoadedModel(model, fingerprint, config, codec,
                     preprocessing_of(config))


def load_classifier(model_dir):
  """A finished uncompressed classifier (the `classifier` kind): the
  reference for codecs' decoded images, or a frozen pretrained classifier.
  ModelDirError if the dir holds another kind."""
  loaded = load(model_dir, allow_uncompressed=True)
  if loaded.model.coder is not None:
    raise ModelDirError(
        f"{model_dir} holds a {loaded.config['model']} model, not an "
        "uncompressed classifier (train one with --model=classifier)")
  return loaded


def restore_pretrained(model, source_dir):
  """Loads `model.pretrained_parts()` from the finished model in
  `source_dir`.

  The parts are matched by name in the source's final checkpoint, so the
  rest of the model (a new classifier head, or a coder's new slice
  predictor) may differ freely; the parts must have the same shapes.
  Returns the source's fingerprint (hex).
  """
  source = load(source_dir)  # checks that the dir is finished and intact
  if source.config["model"] != model.registered_name:
    raise ModelDirError(
        f"{source_dir} holds a {source.config['model']} model; "
        f"--freeze_encoder_from needs a {model.registered_name} one")
  parts = tf.train.Checkpoint(**{
      name: tf.train.Checkpoint(**part) if isinstance(part, dict) else part
      for name, part in model.pretrained_parts().items()})
  try:
    training_checkpoint(parts).restore(
        ModelDir(source_dir).final_checkpoint
    ).expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError) as e:
    raise ModelDirError(
        f"the encoder in {source_dir} does not fit this model (train with "
        f"the same encoder settings): {str(e).splitlines()[0]}") from None
  return source.fingerprint.hex()


def restore_backbone(model):
  """Loads the trained backbone `model` starts training from, if its kind
  has one (its `load_backbone`): the finished classifier in its config's
  `backbone_from`, else its `backbone_weights` file. Models read no files;
  `load` restores the backbone from the model's own checkpoint."""
  source_dir = getattr(model.config, "backbone_from", None)
  if source_dir and not ModelDir(source_dir).exists:
    raise ModelDirError(
        f"--backbone_from={source_dir} holds no trained classifier; train "
        "it first: python -m tfvaeclf.train "
        "--flagfile=configs/DATASET_resnet.flags "
        f"--model_dir={source_dir} (e.g. configs/mnist_resnet.flags)")
  model.load_backbone(load_classifier(source_dir) if source_dir else None)
