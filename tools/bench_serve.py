#!/usr/bin/env python3
"""Throughput and latency of `python -m tfvaeclf.serve`; a Markdown table.

    PYTHONPATH=. tools/bench_serve.py --bundle=BUNDLE [--seconds=5]
        [--concurrency=1,8,32] [--slow_clients=300] [--slow_timeout=1]

First the core alone: images/s of `Core.classify_batch` on 256 one-image
payloads in one call (batched decode + classify, in process), and the time
of a batch of 64 good payloads beside that of 63 good and one that does not
decode (a valid CRC around a string the range decoder refuses): that one
must cost about what a good one does. Then a server process on HTTP and
MQTT (a mosquitto broker started here, on loopback) gets one-image payloads
of real test digits from the edge runtime, from `concurrency` senders at
once, for `--seconds` per row: requests/s and p50/p99 latency (send to
answer), clean, with 5% hostile payloads of every kind (truncated,
bit-flipped, garbage, CRC-valid random strings), with 5% that do not
decode, and (HTTP) beside `--slow_clients` slow-loris connections sending
1 byte/s, half in their headers, half in their body, each replaced at once
when the server drops it: the server runs with `--slow_timeout` as its
header and body timeouts, and the "slow dropped" column gives how many it
dropped in the row and the median and max seconds they had been open. Every
answer is checked: a good payload must get its class, a hostile one a
refusal (a crafted random one may get a class); the "wrong" column counts
the others.

The senders run on the same machine as the server and share its cores.
Targets (2 cores): >= 1,000 messages/s with p99 <= 50 ms at
concurrency 32 over HTTP; batched decode+classify >= 20,000 images/s; 63
good + 1 undecodable payloads <= 1.5x the time of 64 good; slow clients
dropped within the timeout while good requests keep p99 <= 50 ms.
"""

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from paho.mqtt import client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from tfvaeclf import data  # noqa: E402
from tfvaeclf.edge import EdgeEncoder  # noqa: E402
from tfvaeclf.serve.core import Core, Refusal  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOSTILE_SHARE = 0.05
ISOLATION_BATCH = 64
REFUSED = "refused"  # what a payload that does not decode must get


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _wait_for_port(port, seconds=30):
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      return
    except OSError:
      time.sleep(0.1)
  sys.exit(f"nothing listens on port {port}")


def _undecodable(spec, payload):
  """`payload` with bytes after its last string's end, under a valid CRC:
  it passes every check but the range decoder's own."""
  strings = spec.read(payload).strings
  return spec.pack_messages(
      [*strings[:-1], [strings[-1][0] + bytes(range(1, 17))]])[0]


def payloads(bundle_dir, dataset, count, data_dir=None):
  """(the core; good payloads: one-image messages, as boards send; their
  expected class names; hostile ones of every kind; undecodable ones)."""
  images, _ = next(iter(data.load(dataset, data_dir=data_dir).test.batch(
      count)))
  encoder = EdgeEncoder(bundle_dir)
  good = encoder.encode_messages(images.numpy())
  core = Core(bundle_dir)
  expected = [r["classes"] for r in core.classify_batch(good)]
  rng = np.random.default_rng(0)
  hostile = []
  for i, payload in enumerate(good):
    kind = i % 4
    if kind == 0:
      hostile.append(payload[:int(rng.integers(1, len(payload)))])
    elif kind == 1:
      flipped = bytearray(payload)
      flipped[int(rng.integers(len(payload)))] ^= 1 << int(rng.integers(8))
      hostile.append(bytes(flipped))
    elif kind == 2:
      hostile.append(rng.bytes(int(rng.integers(1, 200))))
    else:
      hostile.append(encoder.codec.pack_messages(
          [[rng.bytes(int(rng.integers(1, 30)))]
           for _ in range(encoder.codec.num_streams)])[0])
  undecodable = [_undecodable(encoder.codec, p) for p in good]
  return core, good, expected, hostile, undecodable


def _stream(good, expected, hostile, share, rng, hostile_expected=None):
  """An endless (payload, expected classes, REFUSED or None: any answer)
  picker."""
  def pick():
    if rng.random() < share:
      return hostile[int(rng.integers(len(hostile)))], hostile_expected
    i = int(rng.integers(len(good)))
    return good[i], expected[i]
  return pick


def _right(answer, expected, status_ok):
  if expected is None:  # hostile: refused, or (crafted) some class
    return True
  if expected == REFUSED:
    return not status_ok
  return status_ok and answer.get("classes") == expected


def bench_core(core, good, repeats=5):
  batch = (good * (256 // len(good) + 1))[:256]
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    core.classify_batch(batch)
    best = min(best, time.perf_counter() - start)
  return len(batch) / best


def bench_isolation(core, good, undecodable, repeats=20):
  """Seconds of `classify_batch` (best of `repeats`) of ISOLATION_BATCH
  good payloads, and of as many with the last one undecodable; checks that
  only that one is refused."""
  clean = (good * ISOLATION_BATCH)[:ISOLATION_BATCH]
  mixed = clean[:-1] + undecodable[:1]
  results = core.classify_batch(mixed)
  if (not isinstance(results[-1], Refusal) or
      any(isinstance(r, Refusal) for r in results[:-1])):
    sys.exit("the undecodable payload was not refused alone")
  seconds = []
  for batch in (clean, mixed):
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      core.classify_batch(batch)
      best = min(best, time.perf_counter() - start)
    seconds.append(best)
  return seconds


async def _post(reader, writer, port, payload):
  """One keep-alive HTTP/1.1 POST on raw streams: (status, JSON answer).

  httpx's async client costs more CPU per request than the server does:
  on a shared machine it would measure itself.
  """
  writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (port, len(payload),
                                                   payload))
  head = await reader.readuntil(b"\r\n\r\n")
  status = int(head.split(b" ", 2)[1])
  length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:"))
  return status, json.loads(await reader.readexactly(length))


async def _http_run(port, pick, concurrency, seconds):
  latencies, wrong = [], 0
  deadline = time.monotonic() + seconds

  async def sender():
    nonlocal wrong
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < deadline:
      payload, expected = pick()
      start = time.perf_counter()
      status, answer = await _post(reader, writer, port, payload)
      latencies.append(time.perf_counter() - start)
      wrong += not _right(answer, expected, status == 200)
    writer.close()

  await asyncio.gather(*(sender() for _ in range(concurrency)))
  return latencies, wrong


def http_run(port, pick, concurrency, seconds):
  return asyncio.run(_http_run(port, pick, concurrency, seconds))


def mqtt_run(port, pick, concurrency, seconds):
  """`concurrency` messages out at any time, matched by correlation data."""
  client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
  window = threading.Semaphore(concurrency)
  sent, latencies, lock = {}, [], threading.Lock()
  wrong = 0
  subscribed = threading.Event()

  def on_message(client, userdata, message):
    nonlocal wrong
    del client, userdata
    key = int(message.properties.CorrelationData)
    with lock:
      start, expected = sent.pop(key)
    latencies.append(time.perf_counter() - start)
    answer = json.loads(message.payload)
    wrong += not _right(answer, expected, "error" not in answer)
    window.release()

  client.on_message = on_message
  client.on_subscribe = lambda *_: subscribed.set()
  client.max_inflight_messages_set(max(20, concurrency))
  client.connect("127.0.0.1", port)
  client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
  client.subscribe("tfvaeclf/bench/out", qos=1)
  client.loop_start()
  subscribed.wait(10)
  deadline = time.monotonic() + seconds
  key = 0
  while time.monotonic() < deadline:
    if not window.acquire(timeout=1):
      continue
    payload, expected = pick()
    properties = Properties(PacketTypes.PUBLISH)
    properties.CorrelationData = str(key).encode()
    with lock:
      sent[key] = time.perf_counter(), expected
    client.publish("tfvaeclf/bench/in", payload, qos=1, properties=properties)
    key += 1
  for _ in range(concurrency):  # the last answers
    window.acquire(timeout=10)
  client.disconnect()
  client.loop_stop()
  return latencies, wrong + len(sent)


def dropped(loris):
  """The "slow dropped" cell of a row run beside `loris`, now stopped."""
  seconds = [s for _, s, _ in loris.closed]
  if not seconds:
    return "0"
  return f"{len(seconds):,} ({np.median(seconds):.2f} / {max(seconds):.2f})"


def add_payload_arguments(parser):
  """The arguments of `payloads`: the bundle, and whose test images."""
  parser.add_argument("--bundle", required=True)
  parser.add_argument("--dataset", default="mnist")
  parser.add_argument("--data_dir", default=None,
                      help="Where --dataset lives (see tfvaeclf.data).")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_payload_arguments(parser)
  parser.add_argument("--seconds", type=float, default=5)
  parser.add_argument("--concurrency", default="1,8,32")
  parser.add_argument("--max_batch", type=int, default=64)
  parser.add_argument("--max_wait_ms", type=float, default=2)
  parser.add_argument("--slow_clients", type=int, default=300,
                      help="slow-loris connections beside the good HTTP "
                      "senders (0: no such rows); with the senders, within "
                      "the server's 1,000 connections")
  parser.add_argument("--slow_timeout", type=float, default=1,
                      help="the server's HTTP header and body timeouts, s")
  args = parser.parse_args()
  if args.slow_clients < 0 or args.slow_timeout <= 0:
    parser.error("--slow_clients must be >= 0 and --slow_timeout > 0")
  # tests/support comes from the checkout (PYTHONPATH=.); imported here,
  # so that --help runs without it.
  from tests.support.slow_loris import SlowLoris
  mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
  if not os.path.exists(mosquitto):
    sys.exit("needs the mosquitto broker (apt-get install mosquitto)")

  core, good, expected, hostile, undecodable = payloads(
      args.bundle, args.dataset, 256, args.data_dir)
  print(f"core: {bench_core(core, good):,.0f} images/s "
        "(classify_batch of 256 one-image payloads)")
  clean, mixed = bench_isolation(core, good, undecodable)
  print(f"core: {clean * 1e3:.1f} ms for {ISOLATION_BATCH} good payloads, "
        f"{mixed * 1e3:.1f} ms with one of them undecodable "
        f"(x{mixed / clean:.2f})\n")
  del core
  mixes = (("none", 0, good, None), ("5% any", HOSTILE_SHARE, hostile, None),
           ("5% undecodable", HOSTILE_SHARE, undecodable, REFUSED))
  slow = (f"{args.slow_clients} slow clients", 0, good, None)

  with tempfile.TemporaryDirectory() as tmp:
    broker_port, http_port = _free_port(), _free_port()
    config = os.path.join(tmp, "mosquitto.conf")
    with open(config, "w") as f:
      f.write(f"listener {broker_port} 127.0.0.1\nallow_anonymous true\n"
              "persistence false\nset_tcp_nodelay true\n"
              f"user {os.environ.get('USER') or 'root'}\n")
    broker = subprocess.Popen([mosquitto, "-c", config],
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    server = subprocess.Popen(
        [sys.executable, "-m", "tfvaeclf.serve", f"--bundle={args.bundle}",
         f"--http=127.0.0.1:{http_port}", f"--mqtt=127.0.0.1:{broker_port}",
         f"--max_batch={args.max_batch}", f"--max_wait_ms={args.max_wait_ms}",
         f"--http_header_timeout={args.slow_timeout}",
         f"--http_body_timeout={args.slow_timeout}"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
      _wait_for_port(broker_port)
      if not server.stdout.readline().startswith("serving"):
        sys.exit("the server did not start")
      print("| ingress | hostile | concurrency | requests/s | p50 ms | "
            "p99 ms | wrong | slow dropped (s open: median / max) |")
      print("|---|---|---|---|---|---|---|---|")
      for name, run, target, extra in (
          ("HTTP", http_run, http_port, (slow,) if args.slow_clients else ()),
          ("MQTT", mqtt_run, broker_port, ())):
        for mix in mixes + extra:
          label, share, bad, bad_expected = mix
          for concurrency in map(int, args.concurrency.split(",")):
            pick = _stream(good, expected, bad, share,
                           np.random.default_rng(concurrency), bad_expected)
            loris = (SlowLoris(http_port, args.slow_clients, reconnect=True)
                     if mix is slow else None)
            start = time.perf_counter()
            latencies, wrong = run(target, pick, concurrency, args.seconds)
            elapsed = time.perf_counter() - start
            if loris:
              loris.join()
            p50, p99 = np.percentile(latencies, [50, 99]) * 1000
            print(f"| {name} | {label} | {concurrency} | "
                  f"{len(latencies) / elapsed:,.0f} | {p50:.1f} | "
                  f"{p99:.1f} | {wrong} | "
                  f"{dropped(loris) if loris else '–'} |", flush=True)
    finally:
      server.terminate()
      code = server.wait(60)
      broker.terminate()
      broker.wait(10)
  print(f"\nserver exit code after SIGTERM: {code}")


if __name__ == "__main__":
  main()
