#!/usr/bin/env python3
"""Runs every shell block of the README and docs/ in order, scaled down.

    tools/readme_walk.py [--list] [--blocks=1,3] [--keep] [--pages=P1,P2]

A new user's walk through the docs: README.md, then the pages of docs/ in
the order of the README's contents list (then any page it does not list).
Each ```sh block is taken as written, its commands run in order, page
after page, in one scratch dir where configs/, tools/, docs/ and .venv
(this interpreter's environment) are linked and runs/ starts empty, with
this checkout first on PYTHONPATH and the venv first on PATH, as if
activated. Run it with the project's venv (`.venv/bin/python
tools/readme_walk.py`, or activated). Two test digits, a.png and b.png, stand
in for the user's images.

Scaled down: each command gets the flags of `OVERRIDES` after its own (the
last value of a flag wins), so every training is one short epoch and every
evaluation a few hundred images. Commands that cannot run here are skipped
with the reason (`SKIPS`): the set-up scripts, clusters, data that is not
offline, commands with a placeholder (DIR) and the server. Optional flags
in brackets (`[--int8]`) are given.

Blocks are numbered across the pages (`--blocks`); `--pages` walks only the
pages given (paths from the checkout's root). Prints, per block, its page
and line and PASS, FAIL (with the failing command and its last line of
stderr; the block's later commands are not run) or SKIP; exits 1 if a block
failed. `--list` prints the scaled commands without running them.
The walk takes about an hour on 2 cores, most of it in the sweeps, the
search and the ffmpeg baselines.
"""

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A short epoch on few images, and evaluations on a few hundred.
_TRAINING = ["--epochs=1", "--train_subset=1000", "--validation_size=500"]
# What each command (a module, or a tool by its path) gets after its flags.
OVERRIDES = {
    "tfvaeclf.train": _TRAINING,
    "tfvaeclf.experiments.rdc_sweep": _TRAINING + [
        "--lambdas=0,0.01", "--encoder_lambdas=0", "--rates=8:4",
        "--max_examples=200"],
    "tfvaeclf.experiments.split_sweep": _TRAINING + [
        "--modes=supervised", "--split_points=S1", "--max_examples=200"],
    "tfvaeclf.experiments.frontier": _TRAINING + [
        "--latent_grid=8", "--lambda_grid=2", "--max_examples=200"],
    "tfvaeclf.experiments.search": _TRAINING + ["--max_trials=2"],
    "tfvaeclf.evaluate": ["--max_examples=200"],
    "tfvaeclf.codec": [],
    "tfvaeclf.experiments.report": [],
    "tfvaeclf.experiments.board": ["--calibration_examples=20",
                                   "--num_images=200"],
    "tfvaeclf.edge": [],
    "export": ["--calibration_examples=20"],
    "tools/baselines.py": ["--max_examples=20", "--finetune_examples=50"],
    "tools/bench_predictor.py": ["--num_images=200"],
}
# Commands not run here: (pattern searched in the command, why).
SKIPS = (
    (r"^(bash )?tools/(quickstart|test)\.sh\b", "set-up script: installs, "
     "trains and tests everything (tools/test.sh runs it in CI)"),
    (r"\bTF_CONFIG=|\bKERASTUNER_|^export\b", "needs several machines"),
    (r"\bcifar10", "CIFAR-10 is not offline here"),
    (r"=(DIR|F|D)\b", "a placeholder (DIR, F, D) to fill in"),
    (r"-m tfvaeclf\.serve\b|^curl\b", "a server that runs until stopped "
     "(tests/test_serve.py starts, uses and stops one)"),
)
# The module of `python -m NAME`, as a file of the checkout.
_MODULE_FILES = ("{}.py", "{}/__main__.py")


def blocks(text):
  """[(line number, [command, ...])] of each ```sh block of `text`.

  Lines ending in a backslash continue on the next; comments are dropped.
  """
  found, block, start, pending = [], None, 0, ""
  for number, line in enumerate(text.splitlines(), start=1):
    if block is None:
      if line.strip() == "```sh":
        block, start = [], number
      continue
    if line.strip() == "```":
      found.append((start, block))
      block = None
      continue
    pending += line.rstrip()
    if pending.endswith("\\"):
      pending = pending[:-1] + " "
      continue
    command = shlex.join(shlex.split(pending, comments=True))
    pending = ""
    if command:
      block.append(command)
  return found


def pages():
  """The pages walked, as paths from the checkout's root: README.md, the
  docs/ pages in the order of the README's contents list (a page's commands
  may use what an earlier page made), then the others."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    contents = re.search(r"^## Contents\n(.*?)(?=^## )", f.read(),
                         flags=re.MULTILINE | re.DOTALL)
  linked = re.findall(r"\]\((docs/[^)#\s]+\.md)[)#]",
                      contents.group(1) if contents else "")
  docs = sorted(f"docs/{name}"
                for name in os.listdir(os.path.join(REPO, "docs"))
                if name.endswith(".md"))
  ordered = [page for page in dict.fromkeys(linked) if page in docs]
  return ["README.md"] + ordered + [page for page in docs
                                    if page not in ordered]


def page_blocks(paths):
  """[(page, line number, [command, ...])] of the ```sh blocks of `paths`
  (paths from the checkout's root), in order."""
  found = []
  for page in paths:
    with open(os.path.join(REPO, page), encoding="utf-8") as f:
      found += [(page, line, commands) for line, commands in blocks(f.read())]
  return found


def skip_reason(command):
  """Why `command` is not run here, or None."""
  for pattern, reason in SKIPS:
    if re.search(pattern, command):
      return reason
  return None


def command_key(argv):
  """The `OVERRIDES` key of a command (its module or tool), or None."""
  if argv[:2] == [".venv/bin/python", "-m"] and len(argv) > 2:
    return argv[2]
  if argv[:1] == [".venv/bin/python"] and len(argv) > 1:
    argv = argv[1:]
  if argv and argv[0].startswith("tools/"):
    return argv[0]
  return None


def command_file(key):
  """The file of the checkout that a command key runs, or None."""
  candidates = ([key] if key.startswith("tools/") else
                [pattern.format(key.replace(".", "/"))
                 for pattern in _MODULE_FILES])
  for path in candidates:
    if os.path.isfile(os.path.join(REPO, path)):
      return path
  return None


def scaled(command):
  """The argv that runs `command` here: optional [flags] given, and the
  command's `OVERRIDES` appended. ValueError for an unknown command."""
  argv = [arg[1:-1] if arg.startswith("[") and arg.endswith("]") else arg
          for arg in shlex.split(command)]
  key = command_key(argv)
  if key not in OVERRIDES:
    raise ValueError(f"not a command this walk knows: {command}")
  return argv + OVERRIDES[key]


def _scratch_dir(keep):
  work = tempfile.mkdtemp(prefix="readme_walk.")
  for name in ("configs", "tools", "docs"):
    os.symlink(os.path.join(REPO, name), os.path.join(work, name))
  os.symlink(sys.prefix, os.path.join(work, ".venv"))
  os.makedirs(os.path.join(work, "runs"))
  if keep:
    print(f"scratch dir: {work}", flush=True)
  return work


def _environment():
  return {**os.environ,
          "PYTHONPATH": os.pathsep.join(
              [REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
          "PATH": os.pathsep.join([os.path.join(sys.prefix, "bin"),
                                   os.environ.get("PATH", "")]),
          "MPLBACKEND": "Agg"}


def _write_digits(work, env):
  """a.png and b.png: the first two MNIST test digits."""
  script = ("import sys\n"
            "from tfvaeclf import data\n"
            "splits = data.load('mnist', validation_size=0)\n"
            "for name, (image, _) in zip(sys.argv[1:], splits.test):\n"
            "  data.write_png(name, image.numpy())\n")
  subprocess.run([sys.executable, "-c", script, "a.png", "b.png"], cwd=work,
                 env=env, check=True, capture_output=True)


def _last_line(text):
  lines = [line for line in text.splitlines() if line.strip()]
  return lines[-1] if lines else "(no output)"


def run_block(commands, work, env):
  """(status, detail) of running a block's commands in order."""
  skipped = [reason for reason in map(skip_reason, commands) if reason]
  if len(skipped) == len(commands):
    return "SKIP", skipped[0]
  for command in commands:
    if skip_reason(command):
      continue
    result = subprocess.run(scaled(command), cwd=work, env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
      return "FAIL", (f"`{command}` exited {result.returncode}: "
                      f"{_last_line(result.stderr or result.stdout)}")
  detail = f"{len(commands) - len(skipped)} commands"
  if skipped:
    detail += f", {len(skipped)} skipped ({skipped[0]})"
  return "PASS", detail


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pages", default="",
                      help="walk only these pages, e.g. "
                      "README.md,docs/deploy.md (default: the README, then "
                      "every page of docs/ in the order of its contents)")
  parser.add_argument("--list", action="store_true",
                      help="print the scaled commands, run nothing")
  parser.add_argument("--blocks", default="",
                      help="run only these blocks (1-based), e.g. 1,3")
  parser.add_argument("--keep", action="store_true",
                      help="keep the scratch dir (its path is printed)")
  args = parser.parse_args(argv)
  found = page_blocks([page for page in args.pages.split(",") if page]
                      or pages())
  chosen = {int(b) for b in args.blocks.split(",") if b}
  if args.list:
    for i, (page, line, commands) in enumerate(found, start=1):
      print(f"block {i} ({page} line {line}):")
      for command in commands:
        reason = skip_reason(command)
        print(f"  skip ({reason}): {command}" if reason else
              "  " + shlex.join(scaled(command)))
    return 0
  env = _environment()
  work = _scratch_dir(args.keep)
  failed = False
  try:
    _write_digits(work, env)
    for i, (page, line, commands) in enumerate(found, start=1):
      if chosen and i not in chosen:
        continue
      started = time.perf_counter()
      status, detail = run_block(commands, work, env)
      failed |= status == "FAIL"
      print(f"block {i:2d} ({page} line {line:3d}): {status} "
            f"{time.perf_counter() - started:5.0f} s  {detail}", flush=True)
  finally:
    if not args.keep:
      shutil.rmtree(work, ignore_errors=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
