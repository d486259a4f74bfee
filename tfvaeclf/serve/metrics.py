"""The server's counters, in Prometheus' text exposition format.

    tfvaeclf_serve_requests_total{ingress}          payloads received
    tfvaeclf_serve_refusals_total{ingress,reason}   of which refused
    tfvaeclf_serve_hang_ups_total{ingress}          of which unanswered: the
                                                    sender left mid-body
    tfvaeclf_serve_shed_total{ingress}              of which shed: refused
                                                    unqueued, the queue full
    tfvaeclf_serve_in_flight                        received, not yet answered
    tfvaeclf_serve_batch_size                       histogram, per core call
    tfvaeclf_serve_latency_seconds{ingress}         histogram, receipt to answer
                                                    (neither hang-ups nor shed)

Written by hand: a few counters do not need a client library.
"""

import bisect
import collections
import threading
import time

__all__ = ["CONTENT_TYPE", "Metrics", "SHED"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The refusal reason of a shed payload (`batcher.Overloaded`).
SHED = "overloaded"
_PREFIX = "tfvaeclf_serve"
_LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.,
                    2., 5.)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(**labels):
  if not labels:
    return ""
  return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


class _Histogram:
  """Cumulative buckets, sum and count, per label set."""

  def __init__(self, buckets):
    self.buckets = buckets
    self.counts = collections.defaultdict(lambda: [0] * (len(buckets) + 1))
    self.sums = collections.defaultdict(float)

  def observe(self, value, labels=()):
    self.counts[labels][bisect.bisect_left(self.buckets, value)] += 1
    self.sums[labels] += value

  def lines(self, name):
    for labels, counts in sorted(self.counts.items()):
      cumulative = 0
      for bound, count in zip((*self.buckets, "+Inf"), counts):
        cumulative += count
        yield f"{name}_bucket{_labels(**dict(labels), le=bound)} {cumulative}"
      yield f"{name}_sum{_labels(**dict(labels))} {self.sums[labels]:.6g}"
      yield f"{name}_count{_labels(**dict(labels))} {cumulative}"


class Metrics:
  """Thread-safe counters that the ingresses and the batcher update."""

  def __init__(self):
    self._lock = threading.Lock()
    self._requests = collections.Counter()
    self._refusals = collections.Counter()
    self._hang_ups = collections.Counter()
    self._shed = collections.Counter()
    self._in_flight = 0
    self._batches = _Histogram(_BATCH_BUCKETS)
    self._latency = _Histogram(_LATENCY_BUCKETS)

  def batch(self, size):
    with self._lock:
      self._batches.observe(size)

  def received(self, ingress):
    """Counts a payload in; returns the time `answered` takes."""
    with self._lock:
      self._requests[ingress] += 1
      self._in_flight += 1
    return time.monotonic()

  def answered(self, ingress, since, refused=None):
    """Counts a payload out, refused for the reason `refused` if given. A
    shed one is counted apart, outside the latencies: answered at once, it
    would hide the wait of those that were queued."""
    with self._lock:
      self._in_flight -= 1
      if refused == SHED:
        self._shed[ingress] += 1
        return
      self._latency.observe(time.monotonic() - since, (("ingress", ingress),))
      if refused:
        self._refusals[ingress, refused] += 1

  def hung_up(self, ingress):
    """Counts a payload out unanswered: its sender left before sending it
    all (neither answered nor refused, and not in the latencies)."""
    with self._lock:
      self._in_flight -= 1
      self._hang_ups[ingress] += 1

  def render(self):
    """The Prometheus text of every metric."""
    with self._lock:
      lines = [
          f"# TYPE {_PREFIX}_requests_total counter",
          *(f"{_PREFIX}_requests_total{_labels(ingress=i)} {n}"
            for i, n in sorted(self._requests.items())),
          f"# TYPE {_PREFIX}_refusals_total counter",
          *(f"{_PREFIX}_refusals_total{_labels(ingress=i, reason=r)} {n}"
            for (i, r), n in sorted(self._refusals.items())),
          f"# TYPE {_PREFIX}_hang_ups_total counter",
          *(f"{_PREFIX}_hang_ups_total{_labels(ingress=i)} {n}"
            for i, n in sorted(self._hang_ups.items())),
          f"# TYPE {_PREFIX}_shed_total counter",
          *(f"{_PREFIX}_shed_total{_labels(ingress=i)} {n}"
            for i, n in sorted(self._shed.items())),
          f"# TYPE {_PREFIX}_in_flight gauge",
          f"{_PREFIX}_in_flight {self._in_flight}",
          f"# TYPE {_PREFIX}_batch_size histogram",
          *self._batches.lines(f"{_PREFIX}_batch_size"),
          f"# TYPE {_PREFIX}_latency_seconds histogram",
          *self._latency.lines(f"{_PREFIX}_latency_seconds"),
      ]
    return "\n".join(lines) + "\n"
