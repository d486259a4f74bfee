"""Dynamic batching: payloads that arrive together are classified together.

Ingresses `submit` a payload from any thread and get a
`concurrent.futures.Future`; one worker thread takes what is queued, up to
`max_batch` payloads, waiting at most `max_wait` seconds after the first for
more, and runs them through the core in one call. The queue is bounded: a
payload beyond `max_queue` is refused at once (`Overloaded`), so that a
burst costs its senders a retry instead of costing everyone the wait. A
payload still queued `deadline` seconds after it came is answered a
"deadline" refusal, unclassified: its sender has likely given up. `close`
refuses new payloads and answers every queued one before it returns: the
drain of a graceful shutdown.
"""

import collections
import concurrent.futures
import threading
import time

from absl import logging

from tfvaeclf.serve.core import Refusal
from tfvaeclf.serve.metrics import SHED

__all__ = ["Batcher", "NotQueued", "Overloaded", "ShuttingDown", "outcome"]


class NotQueued(RuntimeError):
  """`submit` refused a payload; `reason` is the label of its refusal."""
  reason = None


class ShuttingDown(NotQueued):
  """`submit` after `close`: the server no longer takes payloads."""
  reason = "shutting_down"


class Overloaded(NotQueued):
  """`submit` with the queue full: the payload is shed, to be sent again."""
  reason = SHED


class Batcher:
  """Queues payloads for `classify(list) -> list` on one worker thread.

  Args:
    classify: the core's `classify_batch`.
    max_batch: payloads per call at most.
    max_wait: seconds the first payload of a batch waits for others.
    on_batch: called with each batch's size (for the metrics).
    max_queue: payloads waiting at most; None: no bound.
    deadline: seconds a payload may wait in the queue; None: no limit.
  """

  def __init__(self, classify, max_batch=64, max_wait=0.002, on_batch=None,
               max_queue=None, deadline=None):
    if (max_batch < 1 or max_wait < 0
        or (max_queue is not None and max_queue < 1)
        or (deadline is not None and deadline <= 0)):
      raise ValueError(f"max_batch and max_queue must be >= 1, max_wait >= 0 "
                       f"and deadline > 0, got {max_batch}, {max_queue}, "
                       f"{max_wait} and {deadline}")
    self._classify = classify
    self._max_batch = max_batch
    self._max_wait = max_wait
    self._on_batch = on_batch
    self._max_queue = max_queue
    self._deadline = deadline
    self._queue = collections.deque()  # (payload, future, expiry)
    self._ready = threading.Condition()
    self._closing = False
    self._worker = threading.Thread(target=self._loop, name="batcher",
                                    daemon=True)
    self._worker.start()

  def submit(self, payload):
    """Queues one payload; the future gets its result or `Refusal`.

    Raises:
      ShuttingDown: after `close`.
      Overloaded: `max_queue` payloads are waiting already.
    """
    future = concurrent.futures.Future()
    expiry = None if self._deadline is None else (
        time.monotonic() + self._deadline)
    with self._ready:
      if self._closing:
        raise ShuttingDown("the server is shutting down")
      if self._max_queue is not None and len(self._queue) >= self._max_queue:
        raise Overloaded(f"the server is overloaded ({self._max_queue} "
                         "payloads queued); send it again later")
      self._queue.append((payload, future, expiry))
      self._ready.notify()
    return future

  def close(self):
    """Refuses new payloads, answers the queued ones, stops the worker."""
    with self._ready:
      self._closing = True
      self._ready.notify()
    self._worker.join()

  def _next_batch(self):
    """Blocks for a batch; [] once closed and drained. Payloads past their
    deadline are answered on the way, outside the lock (an answer may
    publish)."""
    while True:
      with self._ready:
        while not self._queue and not self._closing:
          self._ready.wait()
        end = time.monotonic() + self._max_wait
        while len(self._queue) < self._max_batch and not self._closing:
          left = end - time.monotonic()
          if left <= 0:
            break
          self._ready.wait(left)
        expired = self._pop_expired()
        count = min(len(self._queue), self._max_batch)
        batch = [self._queue.popleft() for _ in range(count)]
      for _, future, _ in expired:
        future.set_result(Refusal(
            "deadline", f"not classified within {self._deadline:g} s"))
      if batch or not expired:
        return batch

  def _pop_expired(self):
    """The queued payloads past their deadline: the oldest, as every
    payload has the same deadline."""
    if self._deadline is None:
      return []
    now, expired = time.monotonic(), []
    while self._queue and self._queue[0][2] <= now:
      expired.append(self._queue.popleft())
    return expired

  def _loop(self):
    while batch := self._next_batch():
      if self._on_batch:
        self._on_batch(len(batch))
      try:
        results = self._classify([payload for payload, _, _ in batch])
      except Exception as e:  # pylint: disable=broad-except
        # A bug, not bad input (the core refuses that per payload): it is
        # logged whole, and the server goes on with the next batch.
        logging.exception("classifying a batch of %d failed", len(batch))
        for _, future, _ in batch:
          future.set_exception(e)
        continue
      for (_, future, _), result in zip(batch, results):
        future.set_result(result)


def outcome(future):
  """A done future -> its result dict or `Refusal`; a bug's exception (logged
  by the worker) becomes an "internal" refusal, so the sender gets an
  answer."""
  error = future.exception()
  if error is None:
    return future.result()
  return Refusal("internal", "internal error (logged by the server)")
