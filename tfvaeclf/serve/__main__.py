"""Serves a bundle's model over HTTP and/or MQTT until SIGTERM or SIGINT.

    python -m tfvaeclf.serve --bundle=BUNDLE [--http=HOST:PORT]
        [--mqtt=HOST:PORT [--mqtt_shared=GROUP] [--mqtt_user=NAME]]
        [--http_token_file=FILE] [--mqtt_password_file=FILE]
        [--http_tls_cert=FILE --http_tls_key=FILE [--http_tls_client_ca=FILE]]
        [--mqtt_tls_ca=FILE [--mqtt_tls_cert=FILE --mqtt_tls_key=FILE]]
        [--insecure_listen] [--max_batch=64] [--max_wait_ms=2]
        [--max_bytes=65536] [--max_queue=1024] [--deadline_ms=5000]
        [--http_max_connections=1000] [--http_header_timeout=10]
        [--http_body_timeout=10] [--http_keep_alive_timeout=5]

Prints one line to stdout once every ingress is up. On SIGTERM it stops
taking requests, answers those in flight, and exits 0.

Each ingress has its own secret, from a file or the environment
($TFVAECLF_HTTP_TOKEN, $TFVAECLF_MQTT_PASSWORD), never from the command line,
which every user of the machine can read. Beyond loopback, an ingress needs
its secret and TLS, so that the secret never crosses the network in clear
text, unless --insecure_listen.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import ipaddress
import os
import signal
import socket
import threading

from absl import flags

from tfvaeclf.coding import bitstream

__all__ = ["main"]

FLAGS = flags.FLAGS
flags.DEFINE_string("bundle", None, "The bundle to serve (python -m export).")
flags.DEFINE_string("http", None, "HOST:PORT to serve HTTP on.")
flags.DEFINE_string("mqtt", None, "HOST:PORT of the MQTT broker to serve.")
flags.DEFINE_string("mqtt_shared", None,
                    "Join this MQTT 5 shared subscription group, so that "
                    "the group's servers split the messages.")
flags.DEFINE_string("mqtt_user", "tfvaeclf-server",
                    "The broker user name (with the MQTT password).")
flags.DEFINE_string("http_token_file", None,
                    "A file holding the HTTP bearer token (or set "
                    "$TFVAECLF_HTTP_TOKEN).")
flags.DEFINE_string("mqtt_password_file", None,
                    "A file holding --mqtt_user's broker password (or set "
                    "$TFVAECLF_MQTT_PASSWORD).")
flags.DEFINE_string("token", None,
                    "Refused: a secret on the command line shows in the "
                    "process list (see --http_token_file and "
                    "--mqtt_password_file).")
flags.DEFINE_string("http_tls_cert", None,
                    "Serve HTTPS with this PEM certificate (its chain after "
                    "it).")
flags.DEFINE_string("http_tls_key", None,
                    "The PEM private key of --http_tls_cert.")
flags.DEFINE_string("http_tls_client_ca", None,
                    "Also require a client certificate signed by a CA of "
                    "this PEM file.")
flags.DEFINE_string("mqtt_tls_ca", None,
                    "Reach the broker over TLS, its certificate checked "
                    "against the CAs of this PEM file.")
flags.DEFINE_string("mqtt_tls_cert", None,
                    "A PEM client certificate to show the broker.")
flags.DEFINE_string("mqtt_tls_key", None,
                    "The PEM private key of --mqtt_tls_cert.")
flags.DEFINE_bool("insecure_listen", False,
                  "Serve or connect beyond loopback without an ingress's "
                  "secret or TLS anyway.")
flags.DEFINE_integer("max_batch", 64, "Payloads per model call at most.")
flags.DEFINE_float("max_wait_ms", 2.0,
                   "How long a payload waits for others to batch with.")
flags.DEFINE_integer("max_bytes", 65536, "Largest payload taken, in bytes.")

# Load shedding and the limits a slow or greedy client meets.
flags.DEFINE_integer("max_queue", 1024,
                     "Payloads waiting for the model at most; beyond, one is "
                     "shed (HTTP 503 with Retry-After, an MQTT error).")
flags.DEFINE_float("deadline_ms", 5000.,
                   "A payload still queued this long is answered HTTP 504 "
                   "or an MQTT error, unclassified (0: no deadline).")
flags.DEFINE_integer("http_max_connections", 1000,
                     "Open HTTP connections beyond which a request gets 503.")
flags.DEFINE_float("http_header_timeout", 10.,
                   "Seconds an HTTP connection has to send request headers.")
flags.DEFINE_float("http_body_timeout", 10.,
                   "Seconds an HTTP request has to send its body (408).")
flags.DEFINE_float("http_keep_alive_timeout", 5.,
                   "Seconds an idle HTTP connection is kept open.")


# Per ingress: the flag of the file holding its secret, the environment
# variable that may hold it instead, and what the secret is called.
_SECRETS = {"http": ("http_token_file", "TFVAECLF_HTTP_TOKEN", "HTTP token"),
            "mqtt": ("mqtt_password_file", "TFVAECLF_MQTT_PASSWORD",
                     "MQTT password")}

# Per ingress: its TLS files, --INGRESS_tls_NAME, the first turning TLS on.
_TLS = {"http": ("cert", "key", "client_ca"), "mqtt": ("ca", "cert", "key")}


def _address(flag, value):
  """HOST:PORT or [IPV6]:PORT -> (host, port)."""
  host, _, port = value.rpartition(":")
  if host.startswith("[") and host.endswith("]"):
    host = host[1:-1]
  if not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise cli.UserError(f"--{flag}={value}: expected HOST:PORT")
  return host, int(port)


def _loopback(host):
  try:
    addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
  except socket.gaierror:
    return False
  return all(ipaddress.ip_address(a.split("%")[0]).is_loopback
             for a in addresses)


def _secret(ingress, values):
  """An ingress's secret from its file or its environment variable (one of
  them), or None; `values` are the flags' values."""
  flag, variable, _ = _SECRETS[ingress]
  path, secret = values[flag], os.environ.get(variable)
  if path and secret is not None:
    raise cli.UserError(f"give --{flag} or ${variable}, not both")
  source = f"${variable}"
  if path:
    source = f"--{flag} {path}"
    try:
      with open(path) as f:
        secret = f.read()
    except OSError as e:
      raise cli.UserError(f"cannot read {source}: {e.strerror}") from None
  if secret is None:
    return None
  if not secret.strip():
    raise cli.UserError(f"{source} is empty")
  return secret.strip()


def _tls(ingress, values):
  """An ingress's TLS files as its class's `tls_NAME` arguments; {} without
  TLS."""
  files = {name: values[f"{ingress}_tls_{name}"] for name in _TLS[ingress]}
  given = [f"--{ingress}_tls_{name}" for name, path in files.items() if path]
  if not given:
    return {}
  if not values[ingress]:
    raise cli.UserError(f"{given[0]} needs --{ingress}")
  switch = _TLS[ingress][0]
  if not files[switch]:
    raise cli.UserError(f"{given[0]} needs --{ingress}_tls_{switch}")
  if bool(files["cert"]) != bool(files["key"]):
    raise cli.UserError(f"give --{ingress}_tls_cert and --{ingress}_tls_key "
                        "together")
  return {f"tls_{name}": path for name, path in files.items()}


def _check_exposure(ingress, address, secret, tls, values):
  """Beyond loopback, an ingress needs its secret, and TLS to carry it."""
  if values["insecure_listen"] or _loopback(address[0]):
    return
  flag, variable, name = _SECRETS[ingress]
  where = f"--{ingress}={values[ingress]} is not a loopback address"
  if not secret:
    raise cli.UserError(
        f"{where} and no {name} is set (give --{flag} or ${variable}, or "
        "--insecure_listen)")
  if not tls:
    switch = _TLS[ingress][0]
    raise cli.UserError(
        f"{where} and has no TLS: the {name} would cross the network in "
        f"clear text (give --{ingress}_tls_{switch}, or --insecure_listen)")


def _check_limits(values):
  """UserError unless the shedding and timeout flags are in range."""
  positive = ("max_queue", "http_max_connections", "http_header_timeout",
              "http_body_timeout", "http_keep_alive_timeout")
  wrong = [name for name in positive if values[name] <= 0]
  if values["deadline_ms"] < 0:
    wrong.append("deadline_ms")
  if wrong:
    raise cli.UserError(
        ", ".join(f"--{name}={values[name]}" for name in wrong)
        + ": the load limits must be positive, --deadline_ms not negative")


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if FLAGS.token is not None:
    raise cli.UserError(
        "--token: a secret on the command line shows in the process list; "
        "give " + ", ".join(f"the {name} in --{flag} or ${variable}"
                            for flag, variable, name in _SECRETS.values()))
  if not FLAGS.bundle:
    raise cli.UserError("--bundle is required")
  if not FLAGS.http and not FLAGS.mqtt:
    raise cli.UserError("give --http=HOST:PORT, --mqtt=HOST:PORT or both")
  if FLAGS.max_batch < 1 or FLAGS.max_wait_ms < 0 or FLAGS.max_bytes < 1:
    raise cli.UserError("--max_batch and --max_bytes must be positive, "
                        "--max_wait_ms not negative")
  values = FLAGS.flag_values_dict()
  _check_limits(values)
  http = FLAGS.http and _address("http", FLAGS.http)
  mqtt = FLAGS.mqtt and _address("mqtt", FLAGS.mqtt)
  http_token, mqtt_password = (_secret("http", values),
                               _secret("mqtt", values))
  http_tls, mqtt_tls = _tls("http", values), _tls("mqtt", values)
  for ingress, address, secret, tls in (
      ("http", http, http_token, http_tls),
      ("mqtt", mqtt, mqtt_password, mqtt_tls)):
    if address:
      _check_exposure(ingress, address, secret, tls, values)

  # pylint: disable=g-import-not-at-top
  from tfvaeclf.serve import metrics as metrics_lib
  from tfvaeclf.serve.batcher import Batcher
  from tfvaeclf.serve.core import Core
  core = Core(FLAGS.bundle, max_images=(
      bitstream.MAX_IMAGES if FLAGS.max_images is None else FLAGS.max_images))
  metrics = metrics_lib.Metrics()
  batcher = Batcher(core.classify_batch, FLAGS.max_batch,
                    FLAGS.max_wait_ms / 1000, on_batch=metrics.batch,
                    max_queue=FLAGS.max_queue,
                    deadline=FLAGS.deadline_ms / 1000 or None)
  stop = threading.Event()
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())

  ingresses = []
  try:
    if http:
      from tfvaeclf.serve import http_ingress
      app = http_ingress.make_app(core, batcher, metrics, http_token,
                                  FLAGS.max_bytes, FLAGS.http_body_timeout)
      ingresses.append(http_ingress.HttpIngress(
          app, *http, max_connections=FLAGS.http_max_connections,
          header_timeout=FLAGS.http_header_timeout,
          keep_alive_timeout=FLAGS.http_keep_alive_timeout,
          **http_tls).start())
    if mqtt:
      from tfvaeclf.serve import mqtt_ingress
      ingresses.append(mqtt_ingress.MqttIngress(
          batcher, metrics, *mqtt,
          username=FLAGS.mqtt_user if mqtt_password else None,
          password=mqtt_password, shared=FLAGS.mqtt_shared,
          max_bytes=FLAGS.max_bytes, **mqtt_tls).start())
    print(f"serving model {core.fingerprint} on "
          f"{', '.join(i.address for i in ingresses)}", flush=True)
    while not stop.wait(0.2):
      pass
  finally:
    # The drain: each ingress answers what it took in, then the batcher.
    for ingress in reversed(ingresses):
      ingress.stop()
    batcher.close()


if __name__ == "__main__":
  cli.run(main)
