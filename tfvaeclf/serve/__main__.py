"""Serves a bundle's model over HTTP and/or MQTT until SIGTERM or SIGINT.

    python -m tfvaeclf.serve --bundle=BUNDLE [--http=HOST:PORT]
        [--mqtt=HOST:PORT [--mqtt_shared=GROUP] [--mqtt_user=NAME]]
        [--token=TOKEN | --token_file=FILE] [--insecure_listen]
        [--max_batch=64] [--max_wait_ms=2] [--max_bytes=65536]

Prints one line to stdout once every ingress is up. On SIGTERM it stops
taking requests, answers those in flight, and exits 0. Without a token, it
serves and connects on loopback addresses only, unless --insecure_listen.
"""

from tfvaeclf import cli  # first: quiets TensorFlow's start-up logs

import ipaddress
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
                    "The broker user name (with the token as password).")
flags.DEFINE_string("token", None,
                    "The secret: HTTP bearer token and MQTT password.")
flags.DEFINE_string("token_file", None, "A file holding the token.")
flags.DEFINE_bool("insecure_listen", False,
                  "Without a token, serve or connect beyond loopback anyway.")
flags.DEFINE_integer("max_batch", 64, "Payloads per model call at most.")
flags.DEFINE_float("max_wait_ms", 2.0,
                   "How long a payload waits for others to batch with.")
flags.DEFINE_integer("max_bytes", 65536, "Largest payload taken, in bytes.")
flags.DEFINE_integer("max_images", bitstream.MAX_IMAGES,
                     "Most images taken in one payload.")


def _address(flag, value):
  host, _, port = value.rpartition(":")
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


def _token(token, token_file):
  """The token given inline or in a file (one of them), or None."""
  if token and token_file:
    raise cli.UserError("give --token or --token_file, not both")
  if not token_file:
    return token
  try:
    with open(token_file) as f:
      token = f.read().strip()
  except OSError as e:
    raise cli.UserError(
        f"cannot read --token_file {token_file}: {e.strerror}") from None
  if not token:
    raise cli.UserError(f"--token_file {token_file} is empty")
  return token


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.bundle:
    raise cli.UserError("--bundle is required")
  if not FLAGS.http and not FLAGS.mqtt:
    raise cli.UserError("give --http=HOST:PORT, --mqtt=HOST:PORT or both")
  if FLAGS.max_batch < 1 or FLAGS.max_wait_ms < 0 or FLAGS.max_bytes < 1:
    raise cli.UserError("--max_batch and --max_bytes must be positive, "
                        "--max_wait_ms not negative")
  token = _token(FLAGS.token, FLAGS.token_file)
  http = FLAGS.http and _address("http", FLAGS.http)
  mqtt = FLAGS.mqtt and _address("mqtt", FLAGS.mqtt)
  if not token and not FLAGS.insecure_listen:
    for flag, address in (("http", http), ("mqtt", mqtt)):
      if address and not _loopback(address[0]):
        raise cli.UserError(
            f"--{flag}={address[0]}:{address[1]} is not a loopback address "
            "and no --token is set (give one, or --insecure_listen)")

  # pylint: disable=g-import-not-at-top
  from tfvaeclf.serve import metrics as metrics_lib
  from tfvaeclf.serve.batcher import Batcher
  from tfvaeclf.serve.core import Core
  core = Core(FLAGS.bundle, max_images=FLAGS.max_images)
  metrics = metrics_lib.Metrics()
  batcher = Batcher(core.classify_batch, FLAGS.max_batch,
                    FLAGS.max_wait_ms / 1000, on_batch=metrics.batch)
  stop = threading.Event()
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())

  ingresses = []
  try:
    if http:
      from tfvaeclf.serve import http_ingress
      app = http_ingress.make_app(core, batcher, metrics, token,
                                  FLAGS.max_bytes)
      ingresses.append(http_ingress.HttpIngress(app, *http).start())
    if mqtt:
      from tfvaeclf.serve import mqtt_ingress
      ingresses.append(mqtt_ingress.MqttIngress(
          batcher, metrics, *mqtt, username=FLAGS.mqtt_user if token else None,
          password=token, shared=FLAGS.mqtt_shared,
          max_bytes=FLAGS.max_bytes).start())
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
