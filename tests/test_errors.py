"""User errors sit at the bottom: one line each, known without TensorFlow."""

import json
import subprocess
import sys

import pytest

from tfvaeclf import (baselines, data, distribute, errors, imageio,
                      model_dir)
from tfvaeclf.coding import bitstream, bundle
from tests.conftest import REPO, run_cli

# In a fresh interpreter: imports a module, or runs one as `python -m`
# would, then prints the names of every module loaded.
LOADED = r"""
import importlib, json, runpy, sys
how, module, *args = sys.argv[1:]
if how == "import":
  importlib.import_module(module)
else:
  sys.argv = [module, *args]
  try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
  except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def loaded_modules(how, module, *args):
  """What `import MODULE` (how="import") or `python -m MODULE ARGS...`
  (how="run") loads in a fresh interpreter, and what it printed."""
  result = subprocess.run(
      [sys.executable, "-c", LOADED, how, module, *args], cwd=REPO,
      capture_output=True, text=True, check=True)
  *printed, modules = result.stdout.splitlines()
  return json.loads(modules), "\n".join(printed)


def test_report_help_loads_no_tensorflow():
  modules, printed = loaded_modules("run", "tfvaeclf.experiments.report",
                                     "--help")
  assert "--baselines" in printed and "matplotlib" in modules
  assert not [m for m in modules if m.startswith(("tensorflow", "keras"))]


def test_cli_knows_user_errors_from_errors_alone():
  modules, _ = loaded_modules("import", "tfvaeclf.cli")
  ours = [m for m in modules if m.startswith("tfvaeclf")]
  assert ours == ["tfvaeclf", "tfvaeclf.cli", "tfvaeclf.errors"]


def test_errors_needs_the_standard_library_only():
  modules, _ = loaded_modules("import", "tfvaeclf.errors")
  at_start, _ = loaded_modules("import", "json")  # and what site loads
  added = {m.partition(".")[0] for m in set(modules) - set(at_start)}
  assert added - set(sys.stdlib_module_names) == {"tfvaeclf"}


@pytest.mark.parametrize("old, new", [
    (bitstream.BitstreamError, errors.BitstreamError),
    (data.ImageFileError, errors.ImageFileError),
    (imageio.ImageFileError, errors.ImageFileError),
    (data.DatasetUnavailableError, errors.DatasetUnavailableError),
    (model_dir.ModelDirError, errors.ModelDirError),
    (bundle.BundleError, errors.BundleError),
    (baselines.BaselineUnavailableError, errors.BaselineUnavailableError),
    (distribute.ClusterConfigError, errors.ClusterConfigError),
])
def test_old_names_are_the_errors_raised(old, new):
  assert old is new


@pytest.mark.parametrize("name", errors.__all__)
def test_every_user_error_ends_in_one_line_exit_2(name, capsys):
  error = getattr(errors, name)

  def main(argv):
    del argv
    raise error("first part\n  and its   second")

  code, out, err = run_cli(main, [], capsys)
  assert (code, out, err) == (2, "", "error: first part and its second\n")


def test_a_bug_keeps_its_traceback(capsys):
  def main(argv):
    del argv
    raise KeyError("a bug")

  with pytest.raises(KeyError):
    run_cli(main, [], capsys)
