"""Run specs: every config means the spec it says, flags belong to kinds,
renamed flags still work, variants are replacements, and only entry points
read flags."""

import ast
import dataclasses
import glob
import os
import subprocess
import sys

from absl import flags
from absl.testing import flagsaver
import pytest

from tfvaeclf import models, specs, train
from tfvaeclf.experiments import search  # noqa: F401  (search flags)
from tests.conftest import run_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS


def _spec(*args):
  """The RunSpec of a command line (flags only), or the UserError."""
  with flagsaver.flagsaver():
    FLAGS(["train", *args])
    return specs.from_flags(FLAGS)


def _config(path):
  return _spec(f"--flagfile={os.path.join(REPO, 'configs', path)}")


def _run(model_name, model, data, train_):
  """The spec a config means: the kind's defaults but `model`'s fields,
  `data` (its seed is training's) and `train_`."""
  return specs.RunSpec(
      model_name, models.get(model_name).Config(**model),
      specs.DataSpec(**data, seed=train_.get("seed", 0)),
      specs.TrainSpec(**train_))


JOINT = {"entropy_model": "factorized", "filters": (32, 64), "kernel_size": 5,
         "latent_channels": 16, "classifier_units": (128,), "lmbda": 0.7}
JOINT_TRAIN = {"augment": "shift", "batch_size": 64, "learning_rate": 0.002,
               "seed": 0}
BETA_VAE = {"entropy_model": "factorized", "filters": (32, 64, 64),
            "kernel_size": 4, "latent_dim": 20, "beta": 3.,
            "quantization_step": 0.1, "classifier": "mlp2"}
BETA_VAE_TRAIN = {"epochs": 10, "batch_size": 128, "learning_rate": 0.001,
                  "seed": 0}
GROUPED = {"entropy_model": "factorized", "beta": 1.,
           "quantization_step": 0.5, "classifier": "mlp2"}
# The grouped VAE's 32x32x3 input on Fashion-MNIST: padded, the grey
# repeated.
PADDED_FASHION = {"name": "fashion_mnist", "image_size": 32,
                  "image_fit": "pad", "image_channels": 3}
PADDED_TRAIN = {"epochs": 25, "batch_size": 64, "learning_rate": 0.001,
                "lr_schedule": "cosine", "seed": 0}
RESNET_TRAIN = {"batch_size": 64, "learning_rate": 0.002,
                "lr_schedule": "cosine", "seed": 0}
RDC = {"backbone": "small_resnet", "filters": (32, 64), "kernel_size": 5,
       "latent_dim": 8, "levels": 4, "lambda_cls": 0.01}
# The joint model's split on CIFAR-10: a small encoder, residual stages on
# the server (configs/cifar10_joint_*.flags).
CIFAR_JOINT = {"entropy_model": "factorized", "classifier_filters": (48, 96),
               "classifier_units": (), "lmbda": 1.}
CIFAR_JOINT_TRAIN = {"augment": "shift_flip", "epochs": 10,
                     "batch_size": 128, "learning_rate": 0.002,
                     "lr_schedule": "cosine", "seed": 0}
RDC_TRAIN = {"epochs": 3, "batch_size": 64, "learning_rate": 0.002,
             "lr_schedule": "cosine", "seed": 0}



def _resnet(dataset, widths, epochs, backbone="small_resnet", **training):
  """The classifier of a resnet config; digits are not flipped."""
  augment = "shift" if dataset == "mnist" else "shift_flip"
  return _run("classifier", {"backbone": backbone, "filters": widths},
              {"name": dataset},
              {**RESNET_TRAIN, "augment": augment, "epochs": epochs,
               **training})


def _rdc(dataset, widths):
  return _run("rdc", {**RDC, "backbone_widths": widths,
                      "backbone_from": f"runs/{dataset}_classifier"},
              {"name": dataset}, RDC_TRAIN)


EXPECTED = {
    "cifar10_grouped_vae_v1.flags": _run(
        "grouped_vae", {**GROUPED, "version": "v1"}, {"name": "cifar10"},
        {"epochs": 110, "batch_size": 64, "learning_rate": 0.001,
         "seed": 0}),
    "cifar10_resnet.flags": _resnet("cifar10", (16, 32, 64), 60,
                                    backbone="resnet20", batch_size=128,
                                    optimizer="sgd", learning_rate=0.1,
                                    weight_decay=0.005),
    "cifar10_resnet9.flags": _resnet("cifar10", (128, 256, 512), 28,
                                     backbone="resnet9", batch_size=128,
                                     optimizer="sgd", learning_rate=0.1,
                                     weight_decay=0.005,
                                     augment="crop_flip_cutout",
                                     precision="mixed_bfloat16"),
    "cifar10_board_resnet8.flags": _resnet("cifar10", (16, 32, 64), 30,
                                           backbone="resnet8",
                                           batch_size=128,
                                           weight_decay=0.05),
    "cifar10_board_plain_cnn.flags": _resnet("cifar10", (8, 12, 16), 30,
                                             backbone="plain_cnn",
                                             batch_size=128,
                                             weight_decay=0.05),
    "cifar10_joint_5kb.flags": _run(
        "joint", {**CIFAR_JOINT, "filters": (8,), "kernel_size": 3,
                  "latent_channels": 16},
        {"name": "cifar10"}, CIFAR_JOINT_TRAIN),
    "cifar10_joint_20kb.flags": _run(
        "joint", {**CIFAR_JOINT, "encoder_blocks": 1, "filters": (8, 16),
                  "latent_channels": 32},
        {"name": "cifar10"}, CIFAR_JOINT_TRAIN),
    "cifar10_joint_80kb.flags": _run(
        "joint", {**CIFAR_JOINT, "encoder_blocks": 1,
                  "filters": (16, 32, 48), "latent_channels": 32},
        {"name": "cifar10"}, CIFAR_JOINT_TRAIN),
    "fashion_mnist_beta_vae.flags": _run(
        "beta_vae", BETA_VAE, {"name": "fashion_mnist"}, BETA_VAE_TRAIN),
    "fashion_mnist_beta_vae_ce.flags": _run(
        "beta_vae", {**BETA_VAE, "encoder_ce_weight": 30.},
        {"name": "fashion_mnist"}, {**BETA_VAE_TRAIN, "epochs": 6}),
    "fashion_mnist_classifier.flags": _resnet("fashion_mnist",
                                              (64, 128, 256), 12),
    "fashion_mnist_board_classifier.flags": _resnet(
        "fashion_mnist", (8, 12, 16), 12, backbone="plain_cnn"),
    "fashion_mnist_frontier.flags": _run(
        "joint", {**JOINT, "latent": "global", "filters": (32, 64, 128),
                  "lmbda": 2.}, {"name": "fashion_mnist"},
        {**JOINT_TRAIN, "augment": "shift_flip", "epochs": 12,
         "lr_schedule": "cosine"}),
    "fashion_mnist_grouped_vae_v1.flags": _run(
        "grouped_vae", {**GROUPED, "version": "v1", "lmbda": 0.3},
        PADDED_FASHION, {**PADDED_TRAIN, "epochs": 110}),
    "fashion_mnist_grouped_vae_v2.flags": _run(
        "grouped_vae", {**GROUPED, "version": "v2", "lmbda": 0.3},
        PADDED_FASHION, PADDED_TRAIN),
    "fashion_mnist_joint_budget_search.flags": _run(
        "joint", JOINT, {"name": "fashion_mnist"},
        {**JOINT_TRAIN, "epochs": 3}),
    "fashion_mnist_joint_context.flags": _run(
        "joint", {**JOINT, "entropy_model": "context"},
        {"name": "fashion_mnist"},
        {**JOINT_TRAIN, "epochs": 5, "lr_schedule": "cosine"}),
    "fashion_mnist_joint_factorized.flags": _run(
        "joint", JOINT, {"name": "fashion_mnist"},
        {**JOINT_TRAIN, "epochs": 5, "lr_schedule": "cosine"}),
    "fashion_mnist_rdc.flags": _rdc("fashion_mnist", (24, 48, 96)),
    "fashion_mnist_resnet.flags": _resnet("fashion_mnist", (24, 48, 96), 4),
    "fashion_mnist_split.flags": _run(
        "split", {"backbone": "small_resnet",
                  "backbone_from": "runs/fashion_mnist_classifier",
                  "backbone_widths": (24, 48, 96), "split_point": "S1",
                  "compress_factor": 12, "bottleneck_mode": "supervised",
                  "entropy_model": "factorized", "lmbda": 2.},
        {"name": "fashion_mnist"}, RDC_TRAIN),
    "mnist_beta_vae.flags": _run(
        "beta_vae", BETA_VAE, {"name": "mnist"}, BETA_VAE_TRAIN),
    "mnist_beta_vae_ce.flags": _run(
        "beta_vae", {**BETA_VAE, "encoder_ce_weight": 30.}, {"name": "mnist"},
        {**BETA_VAE_TRAIN, "epochs": 6}),
    "mnist_beta_vae_search.flags": _run(
        "beta_vae", BETA_VAE, {"name": "mnist"},
        {**BETA_VAE_TRAIN, "epochs": 3, "train_subset": 10000}),
    "mnist_classifier.flags": _resnet("mnist", (32, 64, 128), 10),
    "mnist_board_classifier.flags": _resnet("mnist", (8, 12, 16), 8,
                                            backbone="plain_cnn"),
    "mnist_joint.flags": _run(
        "joint", JOINT, {"name": "mnist"},
        {**JOINT_TRAIN, "epochs": 8, "lr_schedule": "cosine"}),
    "mnist_joint_search.flags": _run(
        "joint", JOINT, {"name": "mnist"}, {**JOINT_TRAIN, "epochs": 1}),
    "mnist_frontier.flags": _run(
        "joint", {**JOINT, "latent": "global", "latent_channels": 8,
                  "lmbda": 2.}, {"name": "mnist"},
        {**JOINT_TRAIN, "epochs": 8, "lr_schedule": "cosine"}),
    "mnist_rdc.flags": _rdc("mnist", (16, 32, 64)),
    "mnist_resnet.flags": _resnet("mnist", (16, 32, 64), 3),
    "quickdraw10_beta_vae.flags": _run(
        "beta_vae", {**BETA_VAE, "extra_conv": True, "latent_dim": 30},
        {"name": "quickdraw10"}, BETA_VAE_TRAIN),
}


def test_every_config_is_listed():
  assert sorted(EXPECTED) == sorted(
      os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs",
                                                          "*.flags")))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses_into_exactly_the_spec_it_means(name, capsys):
  assert _config(name) == EXPECTED[name]
  assert "deprecated" not in capsys.readouterr().err  # configs use new names


def _value_for(name):
  """`--name=VALUE` with a value model flag `name` takes."""
  config = models.get(specs.MODEL_FLAGS[name][0]).Config
  field = specs.flag_settings(config).get(name) or next(
      f for f in dataclasses.fields(config)
      if f.metadata.get("old_flag") == name)
  if field.type is bool:
    return f"--{name}"
  choices = field.metadata["choices"]
  text = choices[0] if choices else {int: "3", float: "0.5", tuple: "8",
                                     str: "x"}[field.type]
  return f"--{name}={text}"


@pytest.mark.parametrize("kind", models.names())
def test_a_flag_of_other_kinds_is_a_one_line_error(kind, tmp_path, capsys):
  foreign = [name for name, kinds in specs.MODEL_FLAGS.items()
             if kind not in kinds]
  assert foreign
  for name in foreign:
    code, _, err = run_cli(train.main, [
        f"--model={kind}", _value_for(name),
        f"--model_dir={tmp_path}"], capsys)
    assert code == 2 and err.count("\n") == 1, (name, err)
    kinds = ", ".join(specs.MODEL_FLAGS[name])
    assert err == (f"error: --{name} is not a flag of --model={kind}; it is "
                   f"one of --model={kinds}\n")
  assert not os.listdir(tmp_path)


def test_the_flags_of_a_kind_are_its_config_fields():
  assert specs.model_flag_names("joint") == [
      "entropy_model", "lmbda", "gamma", "filters", "kernel_size",
      "latent", "latent_channels", "encoder_blocks", "classifier_filters",
      "classifier_units", "decoder"]
  assert specs.model_flag_names("classifier") == [
      "backbone", "backbone_weights", "backbone_widths"]
  assert specs.model_flag_names("beta_vae") == [
      "entropy_model", "encoder_rate_weight", "beta", "quantization_step",
      "head", "encoder_ce_weight", "filters", "kernel_size", "extra_conv",
      "latent_dim"]
  # One meaning a name: the old names belong to the kinds that renamed them.
  assert specs.MODEL_FLAGS["classifier"] == ["beta_vae", "grouped_vae"]
  assert "classifier" in specs.MODEL_FLAGS["filters"]
  assert "beta_vae" in specs.MODEL_FLAGS["lmbda"]
  assert "rdc" not in specs.MODEL_FLAGS["lmbda"]


@pytest.mark.parametrize("args,field,value", [
    (["--model=beta_vae", "--classifier=selu5"], "classifier", "selu5"),
    (["--model=grouped_vae", "--classifier=selu5"], "classifier", "selu5"),
    (["--model=classifier", "--filters=8,16,24"], "filters", (8, 16, 24)),
    (["--model=beta_vae", "--lmbda=0.5"], "lmbda", 0.5),
])
def test_deprecated_names_still_work_with_a_notice(args, field, value,
                                                   capsys):
  old = args[1].split("=")[0]
  assert getattr(_spec(*args).model, field) == value
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and f"warning: {old} is deprecated" in err
  new = {"classifier": "--head", "filters": "--backbone_widths",
         "lmbda": "--encoder_rate_weight"}[field]
  assert err.rstrip().endswith(f"use {new}")
  # The new name means the same, silently.
  renamed = _spec(args[0], f"{new}={args[1].split('=')[1]}")
  assert getattr(renamed.model, field) == value
  assert capsys.readouterr().err == ""


def test_new_name_wins_over_the_old_one(tmp_path, capsys):
  flagfile = tmp_path / "old.flags"
  flagfile.write_text("--model=beta_vae\n--classifier=mlp2\n")
  assert _spec(f"--flagfile={flagfile}", "--head=selu5").model.classifier == (
      "selu5")


def test_command_line_flags_win_over_a_later_flagfile(tmp_path):
  flagfile = tmp_path / "f.flags"
  flagfile.write_text("--model=joint\n--epochs=8\n")
  argv = specs.flagfiles_first(
      ["train", "--epochs=1", f"--flagfile={flagfile}", "--seed=3",
       "--flagfile", str(flagfile)])
  assert argv == ["train", f"--flagfile={flagfile}", "--flagfile",
                  str(flagfile), "--epochs=1", "--seed=3"]
  run = _spec(*argv[1:])
  assert (run.train.epochs, run.train.seed) == (1, 3)


@pytest.mark.slow
def test_train_cli_reads_flags_in_any_order(tmp_path):
  """Through the real entry point: the command line's --model wins over
  the flagfile's, so the flagfile's joint flag is misapplied."""
  flagfile = tmp_path / "f.flags"
  flagfile.write_text("--model=joint\n--latent_channels=4\n")
  result = subprocess.run(
      [sys.executable, "-m", "tfvaeclf.train", "--model=beta_vae",
       f"--flagfile={flagfile}", f"--model_dir={tmp_path / 'run'}"],
      cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 2
  assert result.stderr == ("error: --latent_channels is not a flag of "
                           "--model=beta_vae; it is one of --model=joint\n")


def test_variants_are_replacements_of_one_spec():
  run = _config("mnist_joint.flags")
  variant = specs.with_flags(run, {"lmbda": 2., "batch_size": 32, "seed": 5,
                                   "dataset": "fashion_mnist"})
  assert variant == dataclasses.replace(
      run, model=dataclasses.replace(run.model, lmbda=2.),
      train=dataclasses.replace(run.train, batch_size=32, seed=5),
      data=dataclasses.replace(run.data, seed=5, name="fashion_mnist"))
  assert run == _config("mnist_joint.flags")  # frozen: untouched
  with pytest.raises(ValueError, match="latent_dim"):
    specs.with_flags(run, {"latent_dim": 3})
  vae = specs.with_flags(_config("mnist_beta_vae.flags"),
                         {"head": "selu5", "encoder_rate_weight": 0.1})
  assert (vae.model.classifier, vae.model.lmbda) == ("selu5", 0.1)


def test_a_spec_written_as_flags_reads_back_the_same(capsys):
  for name, run in EXPECTED.items():
    run = dataclasses.replace(run, train=dataclasses.replace(
        run.train, train_subset=100, freeze_encoder_from="runs/x"))
    assert _spec(*specs.to_flags(run)) == run, name
  assert "deprecated" not in capsys.readouterr().err


def test_model_dir_records_the_data_spec():
  assert list(dataclasses.asdict(specs.DataSpec())) == [
      "name", "data_dir", "image_size", "image_fit", "image_channels",
      "validation_size", "seed", "download"]


# -- only entry points read flags -------------------------------------------

def _functions_reading_flags(tree):
  """Names of the top-level functions and methods that read `FLAGS` or
  take a `flag_values` argument."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
      for inner in ast.walk(node):
        if ((isinstance(inner, ast.Name) and inner.id == "FLAGS")
            or (isinstance(inner, ast.arg) and inner.arg == "flag_values")):
          found.add(node.name)
          break
  return found


def test_only_main_functions_read_flags():
  paths = glob.glob(os.path.join(REPO, "tfvaeclf", "**", "*.py"),
                    recursive=True)
  paths += glob.glob(os.path.join(REPO, "export", "*.py"))
  readers = {}
  for path in paths:
    with open(path) as f:
      tree = ast.parse(f.read())
    names = _functions_reading_flags(tree) - {"main"}
    if names:
      readers[os.path.relpath(path, REPO)] = sorted(names)
  # specs turns flags into specs, once, for the entry points.
  assert readers == {os.path.join("tfvaeclf", "specs.py"): [
      "_define_model_flags", "_model_config", "_spec_from_flags",
      "from_flags"]}
