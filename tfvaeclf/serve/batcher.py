"""Dynamic batching: payloads that arrive together are classified together.

Ingresses `submit` a payload from any thread and get a
`concurrent.futures.Future`; one worker thread takes what is queued, up to
`max_batch` payloads, waiting at most `max_wait` seconds after the first for
more, and runs them through the core in one call. `close` refuses new
payloads and answers every queued one before it returns: the drain of a
graceful shutdown.
"""

import collections
import concurrent.futures
import threading
import time

from absl import logging

from tfvaeclf.serve.core import Refusal

__all__ = ["Batcher", "ShuttingDown", "outcome"]


class ShuttingDown(RuntimeError):
  """`submit` after `close`: the server no longer takes payloads."""


class Batcher:
  """Queues payloads for `classify(list) -> list` on one worker thread.

  Args:
    classify: the core's `classify_batch`.
    max_batch: payloads per call at most.
    max_wait: seconds the first payload of a batch waits for others.
    on_batch: called with each batch's size (for the metrics).
  """

  def __init__(self, classify, max_batch=64, max_wait=0.002, on_batch=None):
    if max_batch < 1 or max_wait < 0:
      raise ValueError(f"max_batch must be >= 1 and max_wait >= 0, got "
                       f"{max_batch} and {max_wait}")
    self._classify = classify
    self._max_batch = max_batch
    self._max_wait = max_wait
    self._on_batch = on_batch
    self._queue = collections.deque()
    self._ready = threading.Condition()
    self._closing = False
    self._worker = threading.Thread(target=self._loop, name="batcher",
                                    daemon=True)
    self._worker.start()

  def submit(self, payload):
    """Queues one payload; the future gets its result or `Refusal`."""
    future = concurrent.futures.Future()
    with self._ready:
      if self._closing:
        raise ShuttingDown("the server is shutting down")
      self._queue.append((payload, future))
      self._ready.notify()
    return future

  def close(self):
    """Refuses new payloads, answers the queued ones, stops the worker."""
    with self._ready:
      self._closing = True
      self._ready.notify()
    self._worker.join()

  def _next_batch(self):
    """Blocks for a batch; [] once closed and drained."""
    with self._ready:
      while not self._queue and not self._closing:
        self._ready.wait()
      deadline = time.monotonic() + self._max_wait
      while len(self._queue) < self._max_batch and not self._closing:
        left = deadline - time.monotonic()
        if left <= 0:
          break
        self._ready.wait(left)
      count = min(len(self._queue), self._max_batch)
      return [self._queue.popleft() for _ in range(count)]

  def _loop(self):
    while batch := self._next_batch():
      if self._on_batch:
        self._on_batch(len(batch))
      try:
        results = self._classify([payload for payload, _ in batch])
      except Exception as e:  # pylint: disable=broad-except
        # A bug, not bad input (the core refuses that per payload): it is
        # logged whole, and the server goes on with the next batch.
        logging.exception("classifying a batch of %d failed", len(batch))
        for _, future in batch:
          future.set_exception(e)
        continue
      for (_, future), result in zip(batch, results):
        future.set_result(result)


def outcome(future):
  """A done future -> its result dict or `Refusal`; a bug's exception (logged
  by the worker) becomes an "internal" refusal, so the sender gets an
  answer."""
  error = future.exception()
  if error is None:
    return future.result()
  return Refusal("internal", "internal error (logged by the server)")
