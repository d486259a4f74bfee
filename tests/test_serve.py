"""The server process end to end: real digits from the edge runtime over
HTTP and MQTT (a mosquitto broker the tests start), auth, hostile input,
hang-ups, a shared subscription split between two processes, graceful
shutdown.

Every service listens on a loopback address (127.0.0.1, once ::1) on a free
port and is stopped by its fixture; every wait has a deadline.
"""

import concurrent.futures
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import httpx
import numpy as np
from paho.mqtt import client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest

from tfvaeclf import codec
from tfvaeclf.edge import EdgeEncoder
from tfvaeclf.serve import url
from tests.support.hostile import escape_attack
from tfvaeclf.serve.core import Core, Refusal


pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None,
                                reason="needs Debian's mosquitto broker")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "server-secret"  # the HTTP bearer token
MQTT_PASSWORD = "broker-secret"  # the server's, at the broker
BOARD = ("board", "board-secret")
NUM_DIGITS = 40
START_SECONDS = 120  # a server process: TensorFlow's import, the bundle
ANSWER_SECONDS = 60


def _free_port(host="127.0.0.1"):
  with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def _wait_for_port(port, process, deadline):
  while time.monotonic() < deadline and process.poll() is None:
    try:
      socket.create_connection(("127.0.0.1", port), timeout=1).close()
      return
    except OSError:
      time.sleep(0.05)
  raise RuntimeError(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def digits(bundle_dir, loaded, mnist):
  """(one-image messages of real digits from the edge runtime, what a board
  sends, and the class names `codec classify` gives them)."""
  images, _ = next(iter(mnist.test.batch(NUM_DIGITS)))
  files = EdgeEncoder(bundle_dir).encode_messages(images.numpy())
  names = loaded.config["class_names"]
  expected = [names[int(codec.classify_file(loaded, f)[0])] for f in files]
  return files, expected


def _hostile(files, codec_spec, seed):
  """Bad payloads of four kinds, each named: the wire issue's cases."""
  rng = np.random.default_rng(seed)
  good = files[int(rng.integers(len(files)))]
  flipped = bytearray(good)
  flipped[int(rng.integers(len(good)))] ^= 1 << int(rng.integers(8))
  # A valid header and CRC around a random string: anyone can make one.
  strings = [[rng.bytes(int(rng.integers(1, 30)))]]
  crafted = (codec_spec.pack(strings) if rng.integers(2) else
             codec_spec.pack_messages(strings)[0])
  return [("truncated", good[:int(rng.integers(1, len(good)))]),
          ("flipped", bytes(flipped)),
          ("garbage", rng.bytes(int(rng.integers(1, 200)))),
          ("crafted", crafted)]


class Broker:
  """mosquitto on a free port: the server and one board as users. With
  `tls`, (CA, certificate, key) files, also a TLS listener on `tls_port`
  that requires a client certificate signed by the CA."""

  def __init__(self, directory, tls=None):
    self.port = _free_port()
    passwords = os.path.join(directory, "passwords")
    for i, (user, password) in enumerate([("tfvaeclf-server", MQTT_PASSWORD),
                                          BOARD]):
      subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []),
                      passwords, user, password], check=True)
    config = os.path.join(directory, "mosquitto.conf")
    with open(config, "w") as f:
      f.write(f"listener {self.port} 127.0.0.1\nallow_anonymous false\n"
              f"password_file {passwords}\npersistence false\n"
              "set_tcp_nodelay true\n"
              f"user {os.environ.get('USER') or 'root'}\n")
      if tls:
        ca, certificate, key = tls
        self.tls_port = _free_port()
        f.write(f"listener {self.tls_port} 127.0.0.1\ncafile {ca}\n"
                f"certfile {certificate}\nkeyfile {key}\n"
                "require_certificate true\n")
    self.process = subprocess.Popen(["mosquitto", "-c", config],
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
    for port in (self.port, *([self.tls_port] if tls else [])):
      _wait_for_port(port, self.process, time.monotonic() + 20)

  def close(self):
    self.process.terminate()
    self.process.wait(10)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
  broker = Broker(str(tmp_path_factory.mktemp("mosquitto")))
  yield broker
  broker.close()


class Server:
  """`python -m tfvaeclf.serve` as a process, up once it says so; `env`
  adds to its environment (the secrets)."""

  def __init__(self, *args, env=None):
    self._stderr = tempfile.TemporaryFile("w+")  # a pipe could fill up
    self.process = subprocess.Popen(
        [sys.executable, "-m", "tfvaeclf.serve", *args], cwd=REPO,
        stdout=subprocess.PIPE, stderr=self._stderr, text=True,
        env={**os.environ, **(env or {})})
    self._lines = queue.Queue()
    threading.Thread(target=lambda: [self._lines.put(line) for line in
                                     self.process.stdout],
                     daemon=True).start()

  def wait_ready(self):
    try:
      line = self._lines.get(timeout=START_SECONDS)
    except queue.Empty:
      line = ""
    assert line.startswith("serving model"), self.stop()[1]
    return self

  def stop(self):
    """SIGTERM; (exit code, stderr)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
    try:
      self.process.wait(ANSWER_SECONDS)
    except subprocess.TimeoutExpired:
      self.process.kill()
      self.process.wait()
    return self.process.returncode, self.log()

  def log(self):
    """What it wrote to stderr so far."""
    self._stderr.seek(0)
    return self._stderr.read()


def _http_server(bundle_dir, *args, env=None, host="127.0.0.1"):
  address = url("http", host, _free_port(host))
  server = Server(f"--bundle={bundle_dir}",
                  f"--http={address.removeprefix('http://')}", *args, env=env)
  server.url = address
  return server


def _secret_file(directory, secret):
  path = os.path.join(directory, "secret")
  with open(path, "w") as f:
    f.write(secret + "\n")
  return path


@pytest.fixture(scope="module")
def served(bundle_dir, broker, tmp_path_factory):
  """One server on HTTP and MQTT, the HTTP token from the environment and
  the MQTT password from a file."""
  password_file = _secret_file(tmp_path_factory.mktemp("served"),
                               MQTT_PASSWORD)
  server = _http_server(bundle_dir, f"--mqtt=127.0.0.1:{broker.port}",
                        f"--mqtt_password_file={password_file}",
                        env={"TFVAECLF_HTTP_TOKEN": TOKEN}).wait_ready()
  yield server
  code, err = server.stop()
  assert code == 0, err


# One client for the module: a client per request costs ~10 ms to build.
_HTTP = httpx.Client(timeout=ANSWER_SECONDS)


def _auth(token=TOKEN, scheme="Bearer"):
  return {"Authorization": f"{scheme} {token}"} if token else {}


def _post(url, payload, token=TOKEN, scheme="Bearer"):
  return _HTTP.post(f"{url}/v1/classify", content=payload,
                    headers=_auth(token, scheme))


def _post_all(url, payloads, concurrency=8):
  with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
    return list(pool.map(lambda p: _post(url, p), payloads))


def _metric(url, line_start):
  text = _HTTP.get(f"{url}/metrics", headers=_auth()).text
  values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(line_start)]
  return sum(values)


class Board:
  """An MQTT client of the broker, as a board: sends payloads on its in
  topic, each with its index as correlation data; collects the answers."""

  def __init__(self, broker, device):
    self.device = device
    self.answers = queue.Queue()
    self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                              protocol=mqtt.MQTTv5)
    self.client.username_pw_set(*BOARD)
    subscribed = threading.Event()
    self.client.on_subscribe = lambda *_: subscribed.set()
    self.client.on_message = lambda c, u, message: self.answers.put(
        (int(message.properties.CorrelationData), json.loads(message.payload)))
    self.client.on_connect = lambda client, *_: client.subscribe(
        f"tfvaeclf/{device}/out", qos=1)
    self.client.connect("127.0.0.1", broker.port)
    self.client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    self.client.loop_start()
    assert subscribed.wait(20)

  def ask(self, payloads):
    """The answers to `payloads`, in their order."""
    for i, payload in enumerate(payloads):
      properties = Properties(PacketTypes.PUBLISH)
      properties.CorrelationData = str(i).encode()
      self.client.publish(f"tfvaeclf/{self.device}/in", payload, qos=1,
                          properties=properties)
    answers = {}
    deadline = time.monotonic() + ANSWER_SECONDS
    while len(answers) < len(payloads) and time.monotonic() < deadline:
      try:
        i, answer = self.answers.get(timeout=1)
      except queue.Empty:
        continue
      assert i not in answers, f"answered twice: {i}"
      answers[i] = answer
    assert len(answers) == len(payloads), "answers missing"
    return [answers[i] for i in range(len(payloads))]

  def close(self):
    self.client.disconnect()
    self.client.loop_stop()


@pytest.fixture
def board(broker):
  board = Board(broker, "board-7")
  yield board
  board.close()


def test_core_refuses_per_payload(bundle_dir, digits):
  files, expected = digits
  core = Core(bundle_dir, max_images=4)
  batch = [files[0], b"junk", b"".join(files[:1]), files[1]]
  results = core.classify_batch(batch)
  assert [r["classes"] for r in (results[0], results[2], results[3])] == [
      expected[:1], expected[:1], expected[1:2]]
  assert isinstance(results[1], Refusal) and results[1].reason == "bad_input"
  assert results[0]["fingerprint"] == core.fingerprint
  np.testing.assert_allclose(np.sum(results[0]["probabilities"]), 1,
                             atol=1e-4)


def test_core_refuses_what_does_not_decode_and_answers_the_rest(
    bundle_dir, digits, loaded, mnist):
  """A payload that passes every check but the range decoder's own (the
  escape attack) is refused alone: the batch's others are still answered."""
  files, expected = digits
  images, _ = next(iter(mnist.test.batch(2)))
  attack = escape_attack(loaded, images.numpy())
  results = Core(bundle_dir).classify_batch([files[0], attack, files[1]])
  assert results[0]["classes"] == expected[:1]
  assert results[2]["classes"] == expected[1:2]
  assert isinstance(results[1], Refusal)
  assert "does not decode" in results[1].message


def test_core_limits_images_per_payload(bundle_dir, mnist):
  images, _ = next(iter(mnist.test.batch(5)))
  five = EdgeEncoder(bundle_dir).encode_file(images.numpy())
  results = Core(bundle_dir, max_images=4).classify_batch([five])
  assert results == [Refusal(
      "bad_input", "payload holds 5 images, the server takes 1 to 4")]


@pytest.mark.slow
def test_http_classifies_like_codec(served, digits, mnist, bundle_dir):
  files, expected = digits
  answers = _post_all(served.url, files)
  assert [a.status_code for a in answers] == [200] * len(files)
  assert [a.json()["classes"] for a in answers] == [[e] for e in expected]
  # A multi-image file is one request, answered per image.
  images, _ = next(iter(mnist.test.batch(NUM_DIGITS)))
  whole = EdgeEncoder(bundle_dir).encode_file(images.numpy()[:8])
  assert _post(served.url, whole).json()["classes"] == expected[:8]
  health = _HTTP.get(f"{served.url}/healthz", headers=_auth()).json()
  assert health["fingerprint"] == answers[0].json()["fingerprint"]


def test_mqtt_classifies_like_codec(served, board, digits):
  files, expected = digits
  answers = board.ask(files)
  assert [a.get("classes") for a in answers] == [[e] for e in expected]


def test_auth_is_required(served, digits):
  """The HTTP token and nothing else (not the MQTT password) opens the
  classifier, the metrics and the model's name; liveness is open."""
  files, _ = digits
  for token in (None, "wrong", MQTT_PASSWORD):
    answer = _post(served.url, files[0], token=token)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"
    assert _HTTP.get(f"{served.url}/metrics",
                     headers=_auth(token)).status_code == 401
    health = _HTTP.get(f"{served.url}/healthz", headers=_auth(token))
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
  health = _HTTP.get(f"{served.url}/healthz", headers=_auth()).json()
  assert health["fingerprint"] and health["classes"]


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "bEaReR"])
def test_the_auth_scheme_is_case_insensitive(served, digits, scheme):
  files, expected = digits
  answer = _post(served.url, files[0], scheme=scheme)
  assert (answer.status_code, answer.json()["classes"]) == (200,
                                                            expected[:1])
  assert "fingerprint" in _HTTP.get(f"{served.url}/healthz",
                                    headers=_auth(scheme=scheme)).json()


def test_a_hang_up_mid_body_is_counted_and_not_logged(served):
  """A sender that closes the connection halfway through its body is a
  hang-up: not answered, not refused, no traceback in the log."""
  http = 'ingress="http"'
  before = {name: _metric(served.url, f"tfvaeclf_serve_{name}")
            for name in ("hang_ups_total", f"requests_total{{{http}}}",
                         f"latency_seconds_count{{{http}}}",
                         "refusals_total")}
  host, port = served.url.removeprefix("http://").rsplit(":", 1)
  with socket.create_connection((host, int(port)), timeout=10) as s:
    s.sendall(f"POST /v1/classify HTTP/1.1\r\nHost: {host}\r\n"
              f"Authorization: Bearer {TOKEN}\r\n"
              "Content-Length: 1000\r\n\r\n".encode() + bytes(500))
  deadline = time.monotonic() + 10
  while (_metric(served.url, "tfvaeclf_serve_hang_ups_total")
         == before["hang_ups_total"] and time.monotonic() < deadline):
    time.sleep(0.02)
  after = {name: _metric(served.url, f"tfvaeclf_serve_{name}")
           for name in before}
  assert {name: after[name] - before[name] for name in before} == {
      "hang_ups_total": 1, f"requests_total{{{http}}}": 1,
      f"latency_seconds_count{{{http}}}": 0, "refusals_total": 0}
  assert _metric(served.url, "tfvaeclf_serve_in_flight") == 0
  log = served.log()
  assert "Traceback" not in log and "ClientDisconnect" not in log, log


def _exit_of(*args, env=None):
  """(exit code, stderr) of a server that is expected to stop by itself."""
  server = Server(*args, env=env)
  try:
    server.process.wait(START_SECONDS)
  finally:
    code, err = server.stop()
  return code, err


def test_server_refuses_to_listen_openly_without_its_secret(bundle_dir):
  """Each ingress needs its own secret beyond loopback: the HTTP token does
  not open MQTT, nor the MQTT password HTTP."""
  code, err = _exit_of(f"--bundle={bundle_dir}", "--http=0.0.0.0:8080",
                       env={"TFVAECLF_MQTT_PASSWORD": MQTT_PASSWORD})
  assert code == 2
  assert err.strip().splitlines()[-1] == (
      "error: --http=0.0.0.0:8080 is not a loopback address and no HTTP "
      "token is set (give --http_token_file or $TFVAECLF_HTTP_TOKEN, or "
      "--insecure_listen)")
  code, err = _exit_of(f"--bundle={bundle_dir}", "--mqtt=192.0.2.1:1883",
                       env={"TFVAECLF_HTTP_TOKEN": TOKEN})
  assert code == 2
  assert err.strip().splitlines()[-1] == (
      "error: --mqtt=192.0.2.1:1883 is not a loopback address and no MQTT "
      "password is set (give --mqtt_password_file or "
      "$TFVAECLF_MQTT_PASSWORD, or --insecure_listen)")


def test_a_secret_on_the_command_line_is_refused(bundle_dir, tmp_path):
  """--token would show in the process list: refused in one line that does
  not repeat it; so is a secret given twice, or an empty one."""
  token_file = _secret_file(tmp_path, TOKEN)
  for args, env, error in [
      (["--token=hunter2"], None,
       "error: --token: a secret on the command line shows in the process "
       "list; give the HTTP token in --http_token_file or "
       "$TFVAECLF_HTTP_TOKEN, the MQTT password in --mqtt_password_file or "
       "$TFVAECLF_MQTT_PASSWORD"),
      ([f"--http_token_file={token_file}"], {"TFVAECLF_HTTP_TOKEN": TOKEN},
       "error: give --http_token_file or $TFVAECLF_HTTP_TOKEN, not both"),
      ([], {"TFVAECLF_MQTT_PASSWORD": " "},
       "error: $TFVAECLF_MQTT_PASSWORD is empty")]:
    code, err = _exit_of(f"--bundle={bundle_dir}", "--http=127.0.0.1:8080",
                         *args, env=env)
    assert (code, err.strip().splitlines()) == (2, [error])


@pytest.mark.slow
def test_ipv6_loopback_is_loopback(bundle_dir):
  """[::1] serves without a secret, as 127.0.0.1 does; with none set, the
  model is named to anyone."""
  server = _http_server(bundle_dir, host="::1").wait_ready()
  try:
    health = _HTTP.get(f"{server.url}/healthz").json()
  finally:
    code, err = server.stop()
  assert code == 0, err
  assert health["status"] == "ok" and health["classes"]


@pytest.mark.slow
def test_broker_refuses_wrong_credentials(bundle_dir, broker):
  code, err = _exit_of(f"--bundle={bundle_dir}",
                       f"--mqtt=127.0.0.1:{broker.port}",
                       env={"TFVAECLF_MQTT_PASSWORD": "wrong"})
  assert code == 2
  assert "refused the server: Not authorized" in err.strip().splitlines()[-1]


def test_hostile_stream_is_refused_and_the_rest_answered(served, board,
                                                         digits, loaded):
  files, expected = digits
  rng = np.random.default_rng(0)
  stream = [("good", i) for i in range(len(files))] * 5  # 200 payloads
  hostile = [case for seed in range(3)
             for case in _hostile(files, loaded.codec, seed)]
  for case, position in zip(hostile, rng.choice(len(stream), len(hostile),
                                                replace=False)):
    stream[position] = case
  payloads = [files[x] if kind == "good" else x for kind, x in stream]
  refused = _metric(served.url, "tfvaeclf_serve_refusals_total")

  def check(kind, x, status, answer):
    if kind == "good":
      assert (status, answer["classes"]) == (200, [expected[x]])
    elif kind == "crafted":  # the CRC is valid: refused, or some class
      assert status in (200, 400), answer
    else:
      assert (status, answer["reason"]) == (400, "bad_input"), kind
      assert "\n" not in answer["error"]

  for (kind, x), answer in zip(stream, _post_all(served.url, payloads)):
    check(kind, x, answer.status_code, answer.json())
  for (kind, x), answer in zip(stream, board.ask(payloads)):
    check(kind, x, 400 if "error" in answer else 200, answer)
  assert (_metric(served.url, "tfvaeclf_serve_refusals_total") - refused
          >= 2 * 9)
  too_big = _post(served.url, bytes(65537))
  assert (too_big.status_code, too_big.json()["reason"]) == (413,
                                                             "too_large")
  assert _HTTP.get(f"{served.url}/healthz").status_code == 200
  assert served.process.poll() is None


@pytest.fixture(scope="module")
def pair(bundle_dir, tmp_path_factory):
  """Two servers in one shared subscription group of a broker of their own
  (where `served` does not answer too), each also on HTTP.

  A payload waits up to 3 s for others to batch with: the shutdown test
  finds requests in flight.
  """
  directory = tmp_path_factory.mktemp("pair")
  broker = Broker(str(directory))
  token_file = _secret_file(directory, TOKEN)
  servers = [_http_server(bundle_dir, f"--mqtt=127.0.0.1:{broker.port}",
                          f"--http_token_file={token_file}",
                          "--mqtt_shared=classifiers", "--max_wait_ms=3000",
                          env={"TFVAECLF_MQTT_PASSWORD": MQTT_PASSWORD})
             for _ in range(2)]
  try:
    yield broker, [server.wait_ready() for server in servers]
  finally:
    codes = [server.stop() for server in servers]
    broker.close()
  for code, err in codes:
    assert code == 0, err


@pytest.mark.slow
def test_shared_subscription_splits_the_load(pair, digits):
  files, expected = digits
  broker, servers = pair
  board = Board(broker, "board-8")
  try:
    answers = board.ask(files * 2)
  finally:
    board.close()
  assert [a["classes"] for a in answers] == [[e] for e in expected * 2]
  counts = [_metric(s.url, 'tfvaeclf_serve_requests_total{ingress="mqtt"}')
            for s in servers]
  assert sum(counts) == 2 * len(files) and min(counts) > 0, counts


@pytest.mark.slow
def test_sigterm_answers_in_flight_requests_then_exits_0(pair, digits):
  files, expected = digits
  server = pair[1][0]
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    pending = [pool.submit(_post, server.url, f) for f in files[:8]]
    in_flight, deadline = 0, time.monotonic() + 10
    while in_flight < 8 and time.monotonic() < deadline:
      in_flight = _metric(server.url, "tfvaeclf_serve_in_flight")
    assert in_flight == 8
    server.process.send_signal(signal.SIGTERM)
    answers = [p.result() for p in pending]
  assert [a.json()["classes"] for a in answers] == [[e] for e in expected[:8]]
  assert server.process.wait(ANSWER_SECONDS) == 0, server.stop()[1]
