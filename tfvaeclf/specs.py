"""What a training run is, as typed specs built from the flags once.

    RunSpec    model_name, the kind's Config, DataSpec, TrainSpec, model_dir

An entry point parses its flags and calls `from_flags` once; everything
below it (training, sweeps, search) takes specs and derives variants with
`dataclasses.replace` (or `with_flags`, for values named like their flags).

The training flags are defined here, the model flags from the kinds'
Config fields declared with `models.base.setting`: a flag belongs to the
kinds whose Config declares it, `--helpfull` lists it under each of them,
and setting it for another kind is a one-line error. A flag renamed for one
kind (`old_flag`) is still read for it, with a one-line notice on stderr.
"""

import dataclasses
import sys

from absl import flags

from tfvaeclf import cli, data, distribute, imageio, models
from tfvaeclf.models import base

__all__ = ["DataSpec", "TrainSpec", "RunSpec", "MODEL_FLAGS", "from_flags",
           "with_flags", "parse_value", "flag_items", "to_flags",
           "flag_settings", "model_flag_names", "flagfiles_first"]

FLAGS = flags.FLAGS
setting = base.setting
PRECISIONS = ("float32", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """The `data.load` arguments; a model dir records them as "dataset"."""
  name: str = setting("mnist", f"One of {', '.join(data.DATASET_NAMES)} or "
                      "folder:PATH.", flag="dataset")
  data_dir: str = None  # --data_dir, defined in cli
  image_size: int = setting(
      None, "Resize images to this size (keeping their aspect ratio, then "
      "cropping the centre); the model then takes image files of any size "
      "and mode, resized the same way.")
  image_fit: str = setting(
      "cover", "How --image_size is reached: cover (resize to cover it, "
      "crop the centre) or pad (shrink only if larger, pad the centre with "
      "black).", choices=imageio.FITS)
  image_channels: int = setting(
      None, "Convert images to 1 (greyscale) or 3 (RGB, grey repeated) "
      "channels; needs --image_size.")
  validation_size: int = setting(
      5000, "Examples carved from the end of train for validation.")
  seed: int = None  # --seed, defined with TrainSpec's
  download: bool = setting(
      False, "Let TFDS download the dataset when it is not prepared.")


@dataclasses.dataclass(frozen=True)
class TrainSpec:
  """How the model trains: what `config.json` records under "training"."""
  epochs: int = setting(5, "Epochs to train in total.")
  batch_size: int = 64  # --batch_size, defined in cli
  optimizer: str = setting(
      "adam", "adam, or sgd: momentum 0.9 with Nesterov's update, the "
      "recipe the CIFAR-10 ResNets were published with.",
      choices=("adam", "sgd"))
  learning_rate: float = setting(1e-3, "The optimizer's learning rate.")
  weight_decay: float = setting(
      0., "Decoupled weight decay of the weights (AdamW with adam), not of "
      "biases or batch-norm scales and offsets.")
  lr_schedule: str = setting(
      "constant", "cosine: decay per epoch to 2% of --learning_rate.",
      choices=("constant", "cosine"))
  augment: str = setting(
      "none", "Random shifts (and flips) of training images; "
      "crop_flip_cutout: 1/8-size shifts, flips and Cutout.",
      choices=data.AUGMENTATIONS)
  precision: str = setting(
      "float32", "mixed_bfloat16: a classifier trains with bfloat16 "
      "layers and float32 weights and logits, twice as fast on a CPU with "
      "AMX or a recent GPU; the finished model runs in float32.",
      choices=PRECISIONS)
  seed: int = setting(0, "Seed for weights and data order.")
  train_subset: int = setting(
      None, "Train on only the first N training examples.")
  freeze_encoder_from: str = setting(
      None, "A finished model dir of the same kind: its encoder (and coder;"
      " a VAE's decoder too) is loaded and kept fixed while the rest "
      "trains.")
  strategy: str = setting(
      "default", "default: one device; mirrored: every local GPU; "
      "multi_worker: every worker in the TF_CONFIG environment variable. "
      "--batch_size is per replica: each step takes batch_size x replicas "
      "images.", choices=distribute.STRATEGIES)


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One training run: the kind, its config, the data, the training."""
  model_name: str
  model: base.BaseConfig
  data: DataSpec
  train: TrainSpec
  model_dir: str = None

  def with_data(self, info):
    """The spec with `info`'s image shape and class count in the model
    config (`info`: the loaded dataset's `data.DatasetInfo`)."""
    return dataclasses.replace(self, model=dataclasses.replace(
        self.model, image_shape=tuple(info.image_shape),
        num_classes=info.num_classes))


def _flag_name(field):
  return field.metadata.get("flag") or field.name


def flag_settings(cls):
  """{flag name: field} of the fields of dataclass `cls` a flag sets."""
  return {_flag_name(f): f for f in dataclasses.fields(cls)
          if "help" in f.metadata}


def _parser(field):
  if field.metadata["choices"]:
    return flags.EnumParser(list(field.metadata["choices"]))
  return {bool: flags.BooleanParser, int: flags.IntegerParser,
          float: flags.FloatParser, tuple: flags.ListParser,
          str: flags.ArgumentParser}[field.type]()


def _define(name, field, module_name, help_text):
  default = field.default if module_name is None else None
  options = dict(module_name=module_name)
  if field.type is bool:
    flags.DEFINE_boolean(name, default, help_text, **options)
  elif field.metadata["choices"]:
    flags.DEFINE_enum(name, default, list(field.metadata["choices"]),
                      help_text, **options)
  else:
    serializer = (flags.CsvListSerializer(",") if field.type is tuple
                  else flags.ArgumentSerializer())
    flags.DEFINE(_parser(field), name, default, help_text,
                 serializer=serializer, **options)


def _kind_module(name):
  return models.get(name).__module__


def _model_flag_help(kinds, field, renamed):
  """`kinds`: the field's help, and the kinds that renamed the flag
  (`renamed`: {kind: new name})."""
  kinds_by_new = {}
  for kind, new in renamed.items():
    kinds_by_new.setdefault(new, []).append(kind)
  return " ".join([f"{', '.join(kinds)}: {field.metadata['help']}"] + [
      f"(Deprecated for {', '.join(old_kinds)}: use --{new}.)"
      for new, old_kinds in kinds_by_new.items()])


def _define_model_flags():
  """Every kind's flags; returns {flag name: kinds that use it}, old names
  included."""
  users, renamed = {}, {}  # flag -> kinds; old flag -> {kind: new flag}
  for kind in models.names():
    for name, field in flag_settings(models.get(kind).Config).items():
      users.setdefault(name, []).append(kind)
      if field.metadata["old_flag"]:
        renamed.setdefault(field.metadata["old_flag"], {})[kind] = name
  fields = {}
  for kind in models.names():
    for name, field in flag_settings(models.get(kind).Config).items():
      if name in fields:
        if _parser(field).flag_type() != _parser(fields[name]).flag_type():
          raise TypeError(f"--{name} has two types across the model kinds")
        FLAGS.register_flag_by_module(_kind_module(kind), FLAGS[name])
        continue
      fields[name] = field
      _define(name, field, _kind_module(kind), _model_flag_help(
          users[name], field, renamed.get(name, {})))
  for old, news in renamed.items():
    if old not in fields:  # a name no kind uses any more
      kind, new = next(iter(news.items()))
      _define(old, flag_settings(models.get(kind).Config)[new],
              _kind_module(kind), f"Deprecated: use --{new}.")
  owners = {name: list(kinds) for name, kinds in users.items()}
  for old, news in renamed.items():
    owners.setdefault(old, []).extend(news)
  return owners


for _spec in (DataSpec, TrainSpec):
  for _name, _field in flag_settings(_spec).items():
    _define(_name, _field, None, _field.metadata["help"])
flags.DEFINE_enum("model", "joint", models.names(), "The model kind.")
# Flag name -> the kinds whose Config it sets.
MODEL_FLAGS = _define_model_flags()


def model_flag_names(model_name):
  """The flags of kind `model_name`, in its Config's order."""
  return list(flag_settings(models.get(model_name).Config))


def _value(field, value):
  if field.type is tuple and value is not None:
    return tuple(int(v) for v in value)
  return value


def _model_config(model_name, flag_values):
  """The kind's Config from the flags set for it; a flag set for another
  kind is a UserError."""
  config_cls = models.get(model_name).Config
  values, read = {}, set()
  for name, field in flag_settings(config_cls).items():
    old = field.metadata["old_flag"]
    if old and flag_values[old].present:
      read.add(old)
      print(f"warning: --{old} is deprecated for --model={model_name}; "
            f"use --{name}", file=sys.stderr)
      values[field.name] = _value(field, flag_values[old].value)
    if flag_values[name].present:
      read.add(name)
      values[field.name] = _value(field, flag_values[name].value)
  for name, kinds in MODEL_FLAGS.items():
    if flag_values[name].present and name not in read:
      raise cli.UserError(
          f"--{name} is not a flag of --model={model_name}; it is one of "
          f"--model={', '.join(kinds)}")
  return config_cls(**values)


def _spec_from_flags(cls, flag_values, **values):
  for name, field in flag_settings(cls).items():
    values[field.name] = _value(field, flag_values[name].value)
  return cls(**values)


def from_flags(flag_values, model_name=None):
  """The RunSpec the parsed `flag_values` give (for `model_name`, default
  --model); its model config has the kind's default image shape until
  `RunSpec.with_data`."""
  model_name = model_name or flag_values.model
  return RunSpec(
      model_name, _model_config(model_name, flag_values),
      _spec_from_flags(DataSpec, flag_values, data_dir=flag_values.data_dir,
                       seed=flag_values.seed),
      _spec_from_flags(TrainSpec, flag_values,
                       batch_size=flag_values.batch_size),
      model_dir=flag_values.model_dir)


def _owners(run):
  """{flag name: (spec attribute of `run`, field)} of the flags `run` has."""
  owners = {name: ("model", field) for name, field in
            flag_settings(type(run.model)).items()}
  owners.update((name, ("train", field)) for name, field in
                flag_settings(TrainSpec).items())
  owners.update((name, ("data", field)) for name, field in
                flag_settings(DataSpec).items())
  owners["batch_size"] = ("train", TrainSpec.__dataclass_fields__[
      "batch_size"])
  owners["data_dir"] = ("data", DataSpec.__dataclass_fields__["data_dir"])
  return owners


def with_flags(run, values):
  """`run` with `values` (flag name -> value) set; `seed` sets both the
  data's and the training's. ValueError for a flag `run` does not have."""
  changes = {}
  owners = _owners(run)
  for name, value in values.items():
    if name not in owners:
      raise ValueError(f"--{name} is not a flag of --model={run.model_name}")
    spec, field = owners[name]
    changes.setdefault(spec, {})[field.name] = value
  if "seed" in values:
    changes.setdefault("data", {})["seed"] = values["seed"]
  return dataclasses.replace(run, **{
      spec: dataclasses.replace(getattr(run, spec), **fields)
      for spec, fields in changes.items()})


def parse_value(run, name, text):
  """`text` as flag `name` of `run` takes it (a number, a choice, a list);
  ValueError if it is not one."""
  owners = _owners(run)
  if name not in owners:
    raise ValueError(f"--{name} is not a flag of --model={run.model_name}")
  field = owners[name][1]
  if "help" not in field.metadata:  # defined in cli: one of these types
    return {int: int, str: str}[field.type](text)
  return _value(field, _parser(field).parse(text))


def flag_items(run):
  """[(flag name, value)] of every flag `run` sets, `model` first; values
  are the specs' (tuples for lists), None for an unset one."""
  return [("model", run.model_name)] + [
      (name, getattr(getattr(run, spec), field.name))
      for name, (spec, field) in _owners(run).items()]


def to_flags(run):
  """`run` as the lines of a flagfile that `tfvaeclf.train` reads back."""
  lines = []
  for name, value in flag_items(run):
    if value is None:
      continue
    if isinstance(value, bool):
      lines.append(f"--{'' if value else 'no'}{name}")
    elif isinstance(value, tuple):
      lines.append(f"--{name}={','.join(str(v) for v in value)}")
    else:
      lines.append(f"--{name}={value}")
  return lines


def flagfiles_first(argv):
  """`argv` with its `--flagfile`s moved to the front (after the program),
  so a flag given on the command line wins over a flagfile's whatever
  the order; inside a flagfile, later lines still win."""
  program, args = argv[:1], argv[1:]
  files, others = [], []
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == "--":
      others += args[i:]
      break
    if arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
      files += args[i:i + 2]
      i += 2
      continue
    (files if arg.startswith(("--flagfile=", "-flagfile=")) else
     others).append(arg)
    i += 1
  return program + files + others
