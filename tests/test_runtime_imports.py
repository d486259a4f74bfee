"""The two runtimes stand on the coding core, not on the exporter: importing
the server core loads no TFDS, exporter, MCU generator, TFC or training
data code (and the board's runtime no TensorFlow at all:
tests/test_edge_range_coder.py)."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Modules a server must never load to decode and classify.
NOT_ON_THE_SERVER = ("tensorflow_datasets", "export", "tfvaeclf.export",
                     "export.mcu", "tensorflow_compression", "tfvaeclf.data")


def test_server_core_imports_neither_exporter_nor_tfds():
  code = ("import sys, tfvaeclf.serve.core; "
          f"print(sorted(set({NOT_ON_THE_SERVER!r}) & set(sys.modules)))")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"
