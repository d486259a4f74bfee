"""tools/readme_walk.py reads every block of the README and the docs/ pages
and scales every command, without running them: each names a module, tool,
flagfile and flags that exist."""

import importlib
import importlib.util
import os
import re
import shlex

from absl import flags
import pytest

from tests.conftest import REPO


def _load_walk():
  spec = importlib.util.spec_from_file_location(
      "readme_walk", os.path.join(REPO, "tools", "readme_walk.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


walk = _load_walk()


def _readme_blocks():
  return walk.page_blocks(walk.pages())


def test_the_readme_then_every_docs_page_is_walked():
  pages = walk.pages()
  docs = {f"docs/{name}" for name in os.listdir(os.path.join(REPO, "docs"))
          if name.endswith(".md")}
  assert pages[0] == "README.md" and set(pages[1:]) == docs
  assert len(pages) == len(set(pages))
  # In the contents' order: a page trains what a later one uses.
  assert pages.index("docs/training.md") < pages.index("docs/deploy.md")


def test_every_shell_block_of_the_readme_is_read():
  text = ""
  for page in walk.pages():
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
      text += f.read()
  found = _readme_blocks()
  assert len(found) == text.count("```sh\n")
  for page, line, commands in found:
    assert commands, f"block at {page} line {line} has no command"
  # Continued lines are joined, comments dropped.
  (stage2,) = [c for _, _, cs in found for c in cs
               if "mnist_beta_vae_selu5" in c]
  assert "\\" not in stage2 and "--head=selu5" in stage2
  assert not any("#" in c for _, _, cs in found for c in cs)


def _commands():
  return [command for _, _, commands in _readme_blocks()
          for command in commands]


def test_every_command_is_run_or_skipped_for_a_reason():
  run = [c for c in _commands() if not walk.skip_reason(c)]
  assert len(run) >= 15
  for command in run:
    argv = walk.scaled(command)  # ValueError for an unknown command
    key = walk.command_key(argv)
    assert walk.command_file(key), f"{key} is not in the checkout"
    assert argv[-len(walk.OVERRIDES[key]) or len(argv):] == (
        walk.OVERRIDES[key])
  skipped = {walk.skip_reason(c) for c in _commands()} - {None}
  assert len(skipped) == len(walk.SKIPS)  # every rule is still needed


def test_a_training_is_scaled_down_and_its_files_exist():
  commands = [walk.scaled(c) for c in _commands() if not walk.skip_reason(c)]
  trainings = [argv for argv in commands
               if walk.command_key(argv) == "tfvaeclf.train"]
  assert len(trainings) >= 8
  for argv in trainings:
    assert argv[-3:] == ["--epochs=1", "--train_subset=1000",
                         "--validation_size=500"]
  for argv in commands:
    for arg in argv:
      match = re.fullmatch(r"--(flagfile|rate_config)=(.+)", arg)
      if match:
        assert os.path.isfile(os.path.join(REPO, match.group(2))), arg
  optional = [argv for argv in commands if "--int8" in argv]
  assert optional, "[--int8] is given without its brackets"


def test_the_overrides_are_flags_of_their_commands():
  for key, overrides in walk.OVERRIDES.items():
    names = [arg[2:].split("=")[0] for arg in overrides]
    if key.startswith("tools/"):
      with open(os.path.join(REPO, key), encoding="utf-8") as f:
        source = f.read()
      for name in names:
        assert re.search(rf'DEFINE_\w+\(\s*"{name}"', source), (key, name)
      continue
    module = walk.command_file(key)[:-3].replace("/", ".")
    # The checkout's export/ is the installed tfvaeclf.export: one name a
    # process.
    importlib.import_module(
        f"tfvaeclf.{module}" if module.startswith("export.") else module)
    for name in names:
      assert name in flags.FLAGS, (key, name)


def test_a_command_the_walk_does_not_know_is_refused():
  with pytest.raises(ValueError, match="not a command this walk knows"):
    walk.scaled("rm -rf runs")
  assert walk.skip_reason("tools/quickstart.sh").startswith("set-up")
  assert walk.skip_reason(shlex.join(
      [".venv/bin/python", "-m", "tfvaeclf.codec", "decompress",
       "--model_dir=DIR"])).startswith("a placeholder")
