"""The MQTT ingress: a paho-mqtt client of a broker (e.g. mosquitto).

A board publishes a payload (see `core`) to `tfvaeclf/<device>/in`; the
server answers on `tfvaeclf/<device>/out` with the JSON result, or
{"error": one line, "reason": label}, at QoS 1, copying the request's MQTT 5
correlation data so that a board with several requests out can match them.
A payload shed with the server's queue full gets reason "overloaded" (send
it again later), one still queued at its deadline "deadline".

With `shared=GROUP` the server subscribes to `$share/GROUP/tfvaeclf/+/in`
(an MQTT 5 shared subscription): the broker hands each message to one of the
group's servers, so N processes or machines split one stream. Auth is the
broker's: the server logs in with a user name and password (its own, not the
HTTP token), and the broker's ACLs say who may publish and read which
topics. With a CA file the server reaches the broker over TLS, checking its
certificate, and may show a client certificate of its own.

The server announces an MQTT 5 Maximum Packet Size in its CONNECT: the
largest payload it takes plus `PUBLISH_HEADROOM`. The broker then drops a
larger publish rather than send it (MQTT 5, 3.1.2.11.4), so such a payload
never reaches the server's memory; the board gets no answer. A payload over
`max_bytes` that still fits is answered "too_large".
"""

import json
import logging
import socket
import threading
import time

from paho.mqtt import client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from tfvaeclf.errors import UserError
from tfvaeclf.serve import url
from tfvaeclf.serve.batcher import NotQueued, outcome
from tfvaeclf.serve.core import Refusal

__all__ = ["MqttIngress", "TOPIC_IN", "out_topic"]

INGRESS = "mqtt"
TOPIC_IN = "tfvaeclf/+/in"
# What a board's PUBLISH may hold beyond its payload: the fixed header, the
# topic, the packet id and the properties (correlation data, say).
PUBLISH_HEADROOM = 1024


def out_topic(device):
  """Where the answers to `tfvaeclf/<device>/in` go."""
  return f"tfvaeclf/{device}/out"


class MqttIngress:
  """Subscribes to the in topics and answers through the batcher.

  Args:
    batcher: the server's `Batcher`.
    metrics: the server's `Metrics`.
    host, port: the broker.
    username, password: the broker's credentials (None: anonymous).
    shared: a shared subscription group, or None.
    max_bytes: payloads over this are refused without decoding, and the
      broker is asked not to send those over it plus `PUBLISH_HEADROOM`.
    tls_ca: a PEM file of the CAs that sign the broker's certificate: TLS
      on (None: plain TCP).
    tls_cert, tls_key: PEM files of a client certificate for the broker.
  """

  def __init__(self, batcher, metrics, host, port, username=None,
               password=None, shared=None, max_bytes=65536, tls_ca=None,
               tls_cert=None, tls_key=None):
    self.address = url("mqtts" if tls_ca else "mqtt", host, port)
    self._batcher, self._metrics = batcher, metrics
    self._host, self._port = host, port
    self._max_bytes = max_bytes
    self._topic = f"$share/{shared}/{TOPIC_IN}" if shared else TOPIC_IN
    self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                               protocol=mqtt.MQTTv5)
    if username is not None:
      self._client.username_pw_set(username, password)
    if tls_ca:
      self._set_tls(tls_ca, tls_cert, tls_key)
    # A bug in a callback is logged, and the network thread goes on.
    self._client.suppress_exceptions = True
    self._client.enable_logger(logging.getLogger("tfvaeclf.serve.mqtt"))
    self._client.on_connect = self._on_connect
    self._client.on_subscribe = self._on_subscribe
    self._client.on_message = self._on_message
    self._subscribed = threading.Event()
    self._refused = None
    self._pending = 0
    self._idle = threading.Condition()

  def start(self, timeout=30):
    """Returns once subscribed; UserError if the broker is unreachable or
    refuses the credentials."""
    properties = Properties(PacketTypes.CONNECT)
    properties.MaximumPacketSize = self._max_bytes + PUBLISH_HEADROOM
    try:
      self._client.connect(self._host, self._port, keepalive=30,
                           properties=properties)
    except OSError as e:  # a failed TLS handshake too (ssl.SSLError)
      raise UserError(f"cannot reach the MQTT broker at {self.address}: "
                      f"{e.strerror or e}") from None
    self._client.loop_start()
    deadline = time.monotonic() + timeout
    while not self._subscribed.wait(0.05):
      if self._refused or time.monotonic() > deadline:
        self._client.loop_stop()
        raise UserError(f"MQTT broker at {self.address} refused the server: "
                        f"{self._refused or 'no answer'}")
    return self

  def _set_tls(self, ca, cert, key):
    """TLS to the broker, its certificate and host name checked against
    `ca`; UserError if a file does not load."""
    try:
      self._client.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    except OSError as e:  # ssl.SSLError is one
      files = ", ".join(f for f in (ca, cert, key) if f)
      raise UserError(f"cannot load the MQTT TLS files {files}: "
                      f"{e.strerror or e}") from None

  def stop(self, timeout=30):
    """Unsubscribes, answers what was received, then disconnects."""
    self._client.unsubscribe(self._topic)
    deadline = time.monotonic() + timeout
    with self._idle:
      while self._pending and time.monotonic() < deadline:
        self._idle.wait(deadline - time.monotonic())
    self._client.disconnect()
    self._client.loop_stop()

  def _on_connect(self, client, userdata, flags, reason_code, properties):
    del userdata, flags, properties
    if reason_code.is_failure:
      self._refused = str(reason_code)
      client.disconnect()
      return
    # paho leaves Nagle's algorithm on: an answer written right after an
    # acknowledgement would wait for the broker's delayed ACK (~40 ms).
    client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    # Again on every reconnection: a clean session forgets subscriptions.
    client.subscribe(self._topic, qos=1)

  def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
    del client, userdata, mid, properties
    if any(code.is_failure for code in reason_codes):
      self._refused = f"subscription to {self._topic}: {reason_codes[0]}"
    else:
      self._subscribed.set()

  def _on_message(self, client, userdata, message):
    del client, userdata
    since = self._metrics.received(INGRESS)
    device = message.topic.split("/")[1]
    correlation = getattr(message.properties, "CorrelationData", None)
    with self._idle:
      self._pending += 1
    if len(message.payload) > self._max_bytes:
      self._answer(device, correlation, since, Refusal(
          "too_large", f"payload over {self._max_bytes} bytes"))
      return
    try:
      future = self._batcher.submit(message.payload)
    except NotQueued as e:  # shutting down, or shed
      self._answer(device, correlation, since, Refusal(e.reason, str(e)))
      return
    future.add_done_callback(
        lambda f: self._answer(device, correlation, since, outcome(f)))

  def _answer(self, device, correlation, since, reply):
    refused = isinstance(reply, Refusal)
    body = ({"error": reply.message, "reason": reply.reason} if refused
            else reply)
    properties = None
    if correlation is not None:
      properties = Properties(PacketTypes.PUBLISH)
      properties.CorrelationData = correlation
    self._client.publish(out_topic(device), json.dumps(body), qos=1,
                         properties=properties)
    self._metrics.answered(INGRESS, since, reply.reason if refused else None)
    with self._idle:
      self._pending -= 1
      self._idle.notify_all()
