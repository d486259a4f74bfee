"""tools/*.py run as the README writes them: `tools/x.py`, or with python."""

import ast
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TOOLS = sorted(name for name in os.listdir(os.path.join(REPO, "tools"))
               if name.endswith(".py"))


@pytest.mark.parametrize("tool", TOOLS)
def test_a_tool_runs_by_its_own_name(tool):
  path = os.path.join(REPO, "tools", tool)
  with open(path, encoding="utf-8") as f:
    source = f.read()
  assert source.startswith("#!/usr/bin/env python3\n")
  assert os.access(path, os.X_OK)
  assert "sys.path" not in source  # the installed package is imported
  # As in an activated venv: its python3 comes first on the PATH.
  env = {**os.environ, "PATH": os.pathsep.join(
      [os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
  result = subprocess.run([os.path.join("tools", tool), "--help"],
                          cwd=REPO, env=env, capture_output=True, text=True)
  assert result.returncode in (0, 1), result.stderr  # absl's --help is 1
  assert "Traceback" not in result.stderr
  summary = ast.get_docstring(ast.parse(source)).splitlines()[0]
  assert summary in result.stdout
