"""The server under load it must not take: a full queue sheds, a payload
past its deadline is dropped, and slow clients (slow-loris) are cut off
while good requests stay fast.

The ingresses run in this process on 127.0.0.1, over a batcher whose model
call the tests hold back when they need a full queue; the slow-loris test
serves the session's real bundle. Every wait has a deadline.
"""

import concurrent.futures
import contextlib
import shutil
import socket
import threading
import time
import types

import httpx
import numpy as np
import pytest

from tests.conftest import run_cli
from tests.support.slow_loris import SlowLoris, request_head
from tests.test_serve import MQTT_PASSWORD, Board, Broker, _free_port
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.serve import __main__ as serve_main
from tfvaeclf.serve import http_ingress, metrics as metrics_lib
from tfvaeclf.serve.batcher import Batcher, Overloaded
from tfvaeclf.serve.core import Core
from tfvaeclf.serve.mqtt_ingress import MqttIngress

WAIT_SECONDS = 20
# The slow-loris run: its timeouts, its clients, its good requests and
# the latency they must keep.
SLOW_TIMEOUT = 1.0
SLOW_CLIENTS = 300
GOOD_REQUESTS = 200
GOOD_P99_MS = 50


class HeldModel:
  """A model call that waits for `released`: payloads pile up behind it.
  Answers each payload with its own bytes; records every batch."""

  def __init__(self):
    self.entered = threading.Event()
    self.released = threading.Event()
    self.batches = []

  def __call__(self, payloads):
    self.batches.append(list(payloads))
    self.entered.set()
    assert self.released.wait(WAIT_SECONDS)
    return [{"echo": p.decode()} for p in payloads]

  def hold_one(self, batcher):
    """Submits a payload and returns once the model holds it."""
    future = batcher.submit(b"held")
    assert self.entered.wait(WAIT_SECONDS)
    return future


@contextlib.contextmanager
def _http(classify, core=None, body_timeout=None, max_queue=1, deadline=None,
          **ingress_limits):
  """(url, batcher, metrics) of an HTTP ingress over `classify`, one payload
  per batch; `ingress_limits` are `HttpIngress`'s."""
  metrics = metrics_lib.Metrics()
  batcher = Batcher(classify, max_batch=1, max_wait=0, on_batch=metrics.batch,
                    max_queue=max_queue, deadline=deadline)
  core = core or types.SimpleNamespace(fingerprint="f", class_names=[])
  app = http_ingress.make_app(core, batcher, metrics,
                              body_timeout=body_timeout)
  port = _free_port()
  ingress = http_ingress.HttpIngress(app, "127.0.0.1", port,
                                     **ingress_limits).start()
  try:
    yield f"http://127.0.0.1:{port}", batcher, metrics
  finally:
    ingress.stop()
    batcher.close()


def _metric(metrics, line_start):
  return sum(float(line.rsplit(" ", 1)[1])
             for line in metrics.render().splitlines()
             if line.startswith(line_start))


def test_a_full_queue_sheds_with_503_and_retry_after():
  model = HeldModel()
  with _http(model) as (url, batcher, metrics):
    held, queued = model.hold_one(batcher), batcher.submit(b"queued")
    with pytest.raises(Overloaded):
      batcher.submit(b"one too many")
    answer = httpx.post(f"{url}/v1/classify", content=b"shed",
                        timeout=WAIT_SECONDS)
    model.released.set()
    assert [f.result(WAIT_SECONDS) for f in (held, queued)] == [
        {"echo": "held"}, {"echo": "queued"}]
    again = httpx.post(f"{url}/v1/classify", content=b"again",
                       timeout=WAIT_SECONDS)
  assert answer.status_code == 503, answer.text
  assert answer.headers["retry-after"] == str(
      http_ingress.RETRY_AFTER_SECONDS)
  assert answer.json()["reason"] == "overloaded"
  assert (again.status_code, again.json()) == (200, {"echo": "again"})
  # Shed apart: not a refusal, not in the latencies; the model never saw it.
  assert _metric(metrics, 'tfvaeclf_serve_shed_total{ingress="http"}') == 1
  assert _metric(metrics, "tfvaeclf_serve_refusals_total") == 0
  assert _metric(metrics, "tfvaeclf_serve_latency_seconds_count") == 1
  assert _metric(metrics, "tfvaeclf_serve_in_flight") == 0
  assert b"shed" not in [p for batch in model.batches for p in batch]


def test_a_payload_queued_past_its_deadline_gets_504_unclassified():
  model = HeldModel()
  with _http(model, deadline=0.2) as (url, batcher, metrics):
    held = model.hold_one(batcher)
    with httpx.Client(timeout=WAIT_SECONDS) as client, \
        concurrent.futures.ThreadPoolExecutor(1) as pool:
      late = pool.submit(client.post, f"{url}/v1/classify", content=b"late")
      deadline = time.monotonic() + WAIT_SECONDS
      while (_metric(metrics, "tfvaeclf_serve_in_flight") < 1
             and time.monotonic() < deadline):
        time.sleep(0.01)
      time.sleep(0.4)  # "late" waits in the queue past its deadline
      model.released.set()
      late = late.result(WAIT_SECONDS)
      fresh = client.post(f"{url}/v1/classify", content=b"fresh")
    assert held.result(WAIT_SECONDS) == {"echo": "held"}
  assert late.status_code == 504, late.text
  assert late.json()["reason"] == "deadline"
  assert (fresh.status_code, fresh.json()) == (200, {"echo": "fresh"})
  assert model.batches == [[b"held"], [b"fresh"]]
  assert _metric(metrics, 'tfvaeclf_serve_refusals_total{ingress="http",'
                 'reason="deadline"}') == 1


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
  broker = Broker(str(tmp_path_factory.mktemp("mosquitto")))
  yield broker
  broker.close()


@pytest.mark.skipif(shutil.which("mosquitto") is None,
                    reason="needs Debian's mosquitto broker")
def test_mqtt_sheds_with_an_error_on_the_reply_topic(broker):
  model, metrics = HeldModel(), metrics_lib.Metrics()
  batcher = Batcher(model, max_batch=1, max_wait=0, max_queue=1)
  ingress = MqttIngress(batcher, metrics, "127.0.0.1", broker.port,
                        username="tfvaeclf-server",
                        password=MQTT_PASSWORD).start()
  board = Board(broker, "board-9")
  try:
    held, queued = model.hold_one(batcher), batcher.submit(b"queued")
    [answer] = board.ask([b"shed"])
    model.released.set()
    assert [f.result(WAIT_SECONDS) for f in (held, queued)] == [
        {"echo": "held"}, {"echo": "queued"}]
    assert board.ask([b"again"]) == [{"echo": "again"}]
  finally:
    model.released.set()
    board.close()
    ingress.stop()
    batcher.close()
  assert answer["reason"] == "overloaded" and "later" in answer["error"]
  assert _metric(metrics, 'tfvaeclf_serve_shed_total{ingress="mqtt"}') == 1


def _closed_after(sock, seconds):
  """Reads until the server closes `sock`: (what it said, seconds it took),
  or None if it is still open after `seconds`."""
  sock.settimeout(seconds)
  start, said = time.monotonic(), b""
  try:
    while chunk := sock.recv(4096):
      said += chunk
  except TimeoutError:
    return None
  return said, time.monotonic() - start


@pytest.mark.parametrize("sent", ["nothing", "half the headers",
                                  "headers and half the body"])
def test_a_slow_client_is_cut_off(sent):
  """uvicorn alone waits for a request's headers or body forever."""
  with _http(lambda payloads: [{} for _ in payloads], body_timeout=0.5,
             header_timeout=0.5) as (url, _, metrics):
    port = int(url.rsplit(":", 1)[1])
    head = request_head(port, 10)
    with socket.create_connection(("127.0.0.1", port)) as sock:
      sock.sendall({"nothing": b"", "half the headers": head[:20],
                    "headers and half the body": head + bytes(5)}[sent])
      said, seconds = _closed_after(sock, WAIT_SECONDS)
  assert 0.4 < seconds < 2, seconds
  if sent == "headers and half the body":
    assert said.startswith(b"HTTP/1.1 408 "), said
    assert _metric(metrics, 'tfvaeclf_serve_refusals_total{ingress="http",'
                   'reason="too_slow"}') == 1
  else:
    assert said == b""


def test_an_idle_keep_alive_connection_is_closed():
  with _http(lambda payloads: [{} for _ in payloads],
             keep_alive_timeout=0.5) as (url, _, _):
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port)) as sock:
      sock.sendall(request_head(port, 1) + b"x")
      said, seconds = _closed_after(sock, WAIT_SECONDS)
  assert said.startswith(b"HTTP/1.1 200 ") and 0.4 < seconds < 2, (said,
                                                                    seconds)


def test_reconnecting_slow_clients_stay_as_many():
  """The bench's constant pressure: each one dropped is replaced at once."""
  clients, timeout, seconds = 4, 0.3, 1.1
  with _http(lambda payloads: [{} for _ in payloads], body_timeout=timeout,
             header_timeout=timeout) as (url, _, _):
    loris = SlowLoris(int(url.rsplit(":", 1)[1]), clients, reconnect=True)
    time.sleep(seconds)
    loris.join()
  kinds = [kind for kind, _, _ in loris.closed]
  # Each of the 4 dropped about 3 times; without reconnecting, once at most.
  assert min(kinds.count("headers"), kinds.count("body")) >= clients, kinds
  assert all(timeout - 0.1 < s < seconds for _, s, _ in loris.closed), (
      loris.closed)


@pytest.fixture(scope="module")
def messages(bundle_dir, mnist):
  images, _ = next(iter(mnist.test.batch(20)))
  return EdgeEncoder(bundle_dir).encode_messages(images.numpy())


def _p99_ms(client, url, messages):
  """The p99 latency of GOOD_REQUESTS one after another, spread over
  SLOW_TIMEOUT (the slow clients' lifetime), in ms."""
  latencies, end = [], time.monotonic() + SLOW_TIMEOUT
  for i in range(GOOD_REQUESTS):
    time.sleep(max(0., min(SLOW_TIMEOUT / GOOD_REQUESTS,
                           end - time.monotonic())))
    start = time.monotonic()
    answer = client.post(f"{url}/v1/classify",
                         content=messages[i % len(messages)])
    latencies.append(time.monotonic() - start)
    assert answer.status_code == 200, answer.text
  return float(np.percentile(latencies, 99)) * 1e3


@pytest.mark.usefixtures("no_gc_pauses")
def test_slow_loris_clients_are_dropped_while_good_requests_stay_fast(
    bundle_dir, messages):
  """The p99 target is checked where the machine allows it: when good
  requests alone, just before, already miss it (a busy machine), the test
  says so and skips that check. The server runs in this process, whose
  heap the whole suite has grown: a collection of it once held every
  drop 0.5 to 1.5 s late, so the collector stays off meanwhile."""
  core = Core(bundle_dir)
  with _http(core.classify_batch, core=core, body_timeout=SLOW_TIMEOUT,
             header_timeout=SLOW_TIMEOUT, max_queue=1024,
             max_connections=1000) as (url, _, _):
    with httpx.Client(timeout=WAIT_SECONDS) as client:
      for message in messages:  # warm-up: the model's first calls
        assert client.post(f"{url}/v1/classify",
                           content=message).status_code == 200
      alone = _p99_ms(client, url, messages)
      loris = SlowLoris(int(url.rsplit(":", 1)[1]), SLOW_CLIENTS)
      beside = _p99_ms(client, url, messages)
      loris.join(SLOW_TIMEOUT + WAIT_SECONDS)
  seconds = [s for _, s, _ in loris.closed]
  answers = {(kind, said.split(b"\r\n")[0]) for kind, _, said in loris.closed}
  figures = (f"{SLOW_CLIENTS} slow clients dropped after {min(seconds):.2f} "
             f"to {max(seconds):.2f} s (timeout {SLOW_TIMEOUT:g} s); "
             f"{GOOD_REQUESTS} good requests: p99 {beside:.1f} ms beside "
             f"them, {alone:.1f} ms alone")
  print(figures)
  assert len(seconds) == SLOW_CLIENTS
  assert SLOW_TIMEOUT - 0.1 < min(seconds) and max(seconds) < (
      SLOW_TIMEOUT + 1.), figures
  assert answers == {("headers", b""),
                     ("body", b"HTTP/1.1 408 Request Timeout")}, answers
  if alone > GOOD_P99_MS:
    pytest.skip(f"the machine is too busy for the p99 target: {figures}")
  assert beside <= GOOD_P99_MS, figures


@pytest.mark.parametrize("flag", ["--max_queue=0", "--http_body_timeout=0",
                                  "--http_max_connections=-1",
                                  "--deadline_ms=-1"])
def test_limits_out_of_range_are_refused(flag, capsys, tmp_path):
  code, _, err = run_cli(serve_main.main, [
      f"--bundle={tmp_path}", "--http=127.0.0.1:1", flag], capsys)
  assert code == 2 and "load limits must be positive" in err, err
  assert flag.split("=")[0] in err, err
