"""tools/*.py run as the README writes them: `tools/x.py`, or with python."""

import ast
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

TOOLS = sorted(name for name in os.listdir(os.path.join(REPO, "tools"))
               if name.endswith(".py"))


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.slow
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


def _page(path="README.md"):
  with open(os.path.join(REPO, path), encoding="utf-8") as f:
    return f.read()


def _table_rows(text, header):
  """The rows (lists of cells) of the Markdown table under `header`."""
  lines = text[text.index(header):].splitlines()[2:]
  rows = []
  for line in lines:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip("|").split("|")])
  return rows


def test_check_targets_prints_the_readmes_table(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "model.json").write_text("{}")
  (run / "eval.json").write_text(json.dumps({
      "accuracy": 0.9915, "bpp": 0.0308, "bytes_per_image": 3.0156,
      "estimated_bytes_per_image": 2.6906, "encode_ms_per_image": 0.1324,
      "decode_ms_per_image": 0.0694}))
  later = os.path.getmtime(run / "model.json") + 1
  os.utime(run / "eval.json", (later, later))  # newer: not re-evaluated
  result = subprocess.run(
      [sys.executable, "tools/check_targets.py", f"--model_dir={run}"],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  printed = _table_rows(result.stdout, "| measure |")
  readme = _table_rows(_page(), "| measure | measured | target | met |")
  assert printed == readme


@pytest.mark.slow
def test_baselines_label_qualities_as_the_docs_do(tmp_path):
  out = str(tmp_path / "baselines_mnist.csv")
  result = subprocess.run(
      [sys.executable, "tools/baselines.py", "--dataset=mnist",
       "--max_examples=4", "--codecs=jpeg,jpeg2000",
       "--qualities=jpeg:5:90,jpeg2000:3:1", f"--out={out}"],
      cwd=REPO, capture_output=True, text=True)
  assert result.returncode == 0, result.stderr[-2000:]
  for label in ("q 5", "q 90", "level 3 (ratio 6)", "level 1 (ratio 2)"):
    assert label in result.stdout
  page = _page("docs/baselines.md")
  assert "| JPEG (q 5 … 90) |" in page
  assert "| JPEG 2000 (level 3 … 1, ratio 6 … 2) |" in page
