"""The server over TLS, and the MQTT 5 Maximum Packet Size it announces.

One server serves HTTPS that requires client certificates, and reaches a
mosquitto broker through its TLS listener with a client certificate; a
throwaway CA (`tests.support.tls`) signs every certificate. Boards publish
on the broker's plain listener. Everything listens on 127.0.0.1; every wait
has a deadline.
"""

import contextlib
import queue
import ssl
import time

import httpx
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
import pytest
from starlette.applications import Starlette

from tests.support.tls import Pki
# With the fixture `digits`, and the skip without mosquitto (`pytestmark`).
from tests.test_serve import (  # pylint: disable=unused-import
    ANSWER_SECONDS, MQTT_PASSWORD, TOKEN, Board, Broker, Server, _exit_of,
    _free_port, digits, pytestmark)
from tfvaeclf.errors import UserError
from tfvaeclf.serve.http_ingress import HttpIngress
from tfvaeclf.serve.mqtt_ingress import MqttIngress, PUBLISH_HEADROOM

MAX_BYTES = 1024


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
  return Pki(str(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def tls_served(bundle_dir, pki, tmp_path_factory):
  """(broker, server): the server on HTTPS and, through the broker's TLS
  listener, on MQTT; payloads up to MAX_BYTES."""
  broker = Broker(str(tmp_path_factory.mktemp("tls_broker")),
                  tls=(pki.ca, *pki.issue("broker", "server")))
  http_cert, http_key = pki.issue("http", "server")
  mqtt_cert, mqtt_key = pki.issue("tfvaeclf-server", "client")
  port = _free_port()
  server = Server(f"--bundle={bundle_dir}", f"--http=127.0.0.1:{port}",
                  f"--http_tls_cert={http_cert}", f"--http_tls_key={http_key}",
                  f"--http_tls_client_ca={pki.ca}",
                  f"--mqtt=127.0.0.1:{broker.tls_port}",
                  f"--mqtt_tls_ca={pki.ca}", f"--mqtt_tls_cert={mqtt_cert}",
                  f"--mqtt_tls_key={mqtt_key}", f"--max_bytes={MAX_BYTES}",
                  env={"TFVAECLF_HTTP_TOKEN": TOKEN,
                       "TFVAECLF_MQTT_PASSWORD": MQTT_PASSWORD})
  server.port = port
  try:
    yield broker, server.wait_ready()
  finally:
    code, err = server.stop()
    broker.close()
  assert code == 0, err


def _client(pki, certificate=True):
  """An HTTPS client that trusts `pki`'s CA, with a client certificate of
  that CA if `certificate`."""
  context = ssl.create_default_context(cafile=pki.ca)
  if certificate:
    context.load_cert_chain(*pki.issue("board", "client"))
  return httpx.Client(verify=context, timeout=ANSWER_SECONDS,
                      headers={"Authorization": f"Bearer {TOKEN}"})


def _mqtt_counts(server, pki):
  """The server's MQTT requests and refusals so far (all reasons)."""
  with _client(pki) as client:
    text = client.get(f"https://127.0.0.1:{server.port}/metrics").text
  counts = {"requests_total": 0, "refusals_total": 0}
  for line in text.splitlines():
    name = line.split("{")[0].removeprefix("tfvaeclf_serve_")
    if name in counts and 'ingress="mqtt"' in line:
      counts[name] += float(line.rsplit(" ", 1)[1])
  return counts


def test_https_classifies_and_checks_both_certificates(tls_served, pki,
                                                       digits, tmp_path):
  files, expected = digits
  _, server = tls_served
  address = f"127.0.0.1:{server.port}/v1/classify"
  with _client(pki) as client:
    answers = [client.post(f"https://{address}", content=f)
               for f in files[:4]]
  assert [(a.status_code, a.json()["classes"]) for a in answers] == [
      (200, [e]) for e in expected[:4]]
  # Plain HTTP, no client certificate, or a server certificate of another
  # CA: no answer.
  stranger = Pki(str(tmp_path), name="another CA")
  for client, scheme in [(httpx.Client(), "http"),
                         (_client(pki, certificate=False), "https"),
                         (_client(stranger), "https")]:
    with client, pytest.raises(httpx.TransportError):
      client.post(f"{scheme}://{address}", content=files[0])
  assert server.process.poll() is None
  assert "Traceback" not in server.log(), server.log()


def test_mqtt_over_tls_classifies(tls_served, digits):
  files, expected = digits
  broker, _ = tls_served
  board = Board(broker, "board-tls")
  try:
    answers = board.ask(files[:8])
  finally:
    board.close()
  assert [a.get("classes") for a in answers] == [[e] for e in expected[:8]]


def test_the_broker_never_delivers_a_publish_over_the_maximum_packet_size(
    tls_served, pki, digits):
  """The server announces MAX_BYTES + PUBLISH_HEADROOM as its MQTT 5
  Maximum Packet Size: mosquitto drops a publish of a payload that size
  (with its header, over it) instead of sending it, and the server counts no
  request for it; a payload just over MAX_BYTES still reaches the server
  and is answered too_large; a good one after both is answered."""
  files, expected = digits
  broker, server = tls_served
  before = _mqtt_counts(server, pki)
  board = Board(broker, "board-big")
  payloads = [bytes(MAX_BYTES + PUBLISH_HEADROOM), bytes(MAX_BYTES + 1),
              files[0]]
  answers, deadline = {}, time.monotonic() + 10
  try:
    for i, payload in enumerate(payloads):
      properties = Properties(PacketTypes.PUBLISH)
      properties.CorrelationData = str(i).encode()
      board.client.publish("tfvaeclf/board-big/in", payload, qos=1,
                           properties=properties)
    # The broker keeps one sender's order: an answer to the first would
    # come before the last one's, or at most shortly after.
    while 2 not in answers and time.monotonic() < deadline:
      with contextlib.suppress(queue.Empty):
        answers.update([board.answers.get(timeout=0.5)])
    with contextlib.suppress(queue.Empty):
      answers.update([board.answers.get(timeout=0.5)])
  finally:
    board.close()
  assert sorted(answers) == [1, 2]
  assert answers[1]["reason"] == "too_large"
  assert answers[2]["classes"] == expected[:1]
  after = _mqtt_counts(server, pki)
  assert {name: after[name] - before[name] for name in after} == {
      "requests_total": 2, "refusals_total": 1}


def test_a_secret_beyond_loopback_needs_tls(tmp_path):
  """Beyond loopback, an ingress with its secret but no TLS is refused in
  one line (the secret would cross the network in clear text); so are TLS
  flags that do not go together. All before the bundle is read."""
  secrets = {"TFVAECLF_HTTP_TOKEN": TOKEN,
             "TFVAECLF_MQTT_PASSWORD": MQTT_PASSWORD}
  for args, error in [
      (["--http=0.0.0.0:8080"],
       "--http=0.0.0.0:8080 is not a loopback address and has no TLS: the "
       "HTTP token would cross the network in clear text (give "
       "--http_tls_cert, or --insecure_listen)"),
      (["--mqtt=192.0.2.1:8883"],
       "--mqtt=192.0.2.1:8883 is not a loopback address and has no TLS: the "
       "MQTT password would cross the network in clear text (give "
       "--mqtt_tls_ca, or --insecure_listen)"),
      (["--http=0.0.0.0:8080", "--http_tls_key=k.pem"],
       "--http_tls_key needs --http_tls_cert"),
      (["--http=0.0.0.0:8080", "--http_tls_cert=c.pem"],
       "give --http_tls_cert and --http_tls_key together"),
      (["--mqtt=127.0.0.1:8883", "--mqtt_tls_cert=c.pem",
        "--mqtt_tls_key=k.pem"], "--mqtt_tls_cert needs --mqtt_tls_ca"),
      (["--http=127.0.0.1:8080", "--mqtt_tls_ca=ca.pem"],
       "--mqtt_tls_ca needs --mqtt")]:
    code, err = _exit_of(f"--bundle={tmp_path}", *args, env=secrets)
    assert (code, err.strip().splitlines()) == (2, [f"error: {error}"])


def test_a_tls_file_that_does_not_load_is_refused_in_one_line(tmp_path):
  missing = str(tmp_path / "missing.pem")
  not_pem = tmp_path / "not.pem"
  not_pem.write_text("not a certificate\n")
  with pytest.raises(UserError, match=(
      "^cannot load the HTTP TLS files .*missing.pem, .*missing.pem: "
      "No such file or directory$")):
    HttpIngress(Starlette(), "127.0.0.1", 1, tls_cert=missing,
                tls_key=missing)
  with pytest.raises(UserError, match=(
      r"^cannot load the MQTT TLS files .*not.pem: "
      r"\[X509: NO_CERTIFICATE_OR_CRL_FOUND\]")):
    MqttIngress(None, None, "127.0.0.1", 1, tls_ca=str(not_pem))
