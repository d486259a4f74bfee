"""The server's model calls keep its memory flat: they make no eager tensor
(each leaks, TensorFlow 2.14 on Python 3.11) and run at a few fixed batch
sizes (TensorFlow keeps state per input shape), with the answers the
SavedModel gives the batch unpadded, bit for bit.

The long run (a million payloads, RSS) is tools/bench_serve_memory.py.
"""

import gc
import os
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from tfvaeclf.coding import bundle
from tfvaeclf.serve.bundle_server import BATCH_SIZES, BundleServer

# Batch sizes of every kind: each one up to a batcher's 64, one padded to
# every size, a slice's edges, and several slices.
ROWS = [*range(1, 65), 100, BATCH_SIZES[-1] - 1, BATCH_SIZES[-1],
        BATCH_SIZES[-1] + 1, 3 * BATCH_SIZES[-1] + 7]


@pytest.fixture(scope="module")
def served(bundle_dir):
  return BundleServer(bundle_dir)


def _latents(served, rows, seed=0):
  shape = served.manifest["server"]["signatures"]["classify"]["inputs"][
      bundle.SERVER_INPUT]["shape"][1:]
  return np.random.default_rng(seed).normal(
      size=(rows, *shape)).astype(np.float32)


def test_classes_are_the_saved_models_at_every_batch_size(served,
                                                           bundle_dir):
  classify = tf.saved_model.load(
      os.path.join(bundle_dir, bundle.SERVER_DIR)).signatures["classify"]
  latents = _latents(served, max(ROWS))
  for rows in ROWS:
    got = served.classify(latents[:rows])
    want = classify(**{bundle.SERVER_INPUT: tf.constant(latents[:rows])})
    assert sorted(got) == sorted(want)
    for key, value in want.items():
      assert got[key].dtype == value.dtype.as_numpy_dtype, key
      np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)


def test_the_model_runs_at_a_few_batch_sizes(served, monkeypatch):
  seen = []
  run = served._session.run  # pylint: disable=protected-access

  def spy(name, inputs):
    seen.extend(len(value) for value in inputs.values())
    return run(name, inputs)

  monkeypatch.setattr(served._session, "run", spy)  # pylint: disable=W0212
  latents = _latents(served, max(ROWS))
  for rows in ROWS:
    served.classify(latents[:rows])
  assert set(seen) == set(BATCH_SIZES)
  assert len(BATCH_SIZES) <= 10


def test_classifying_leaves_no_memory_behind(served):
  """What Python allocates in 4,000 calls of every batch size up to 64 is
  freed: an eager tensor per input and output (about 120 B a call that
  tracemalloc sees) would leave some 480 KB. The first 2,000 calls, also
  traced, fill whatever caches fill once; the next 4,000 may leave under
  25 B a call (some 30 KB come and go from run to run)."""
  latents = _latents(served, 64)
  for rows in range(1, 65):  # every batch size: TensorFlow's own caches
    served.classify(latents[:rows])
  tracemalloc.start()
  try:
    for window in (2000, 4000):
      for call in range(window):
        served.classify(latents[:1 + call % 64])
      gc.collect()
      if window == 2000:
        before, _ = tracemalloc.get_traced_memory()
    after, _ = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert after - before < 4000 * 25
