"""The HTTP ingress: Starlette on uvicorn.

    POST /v1/classify   body: a payload (see `core`) -> 200 JSON result
                        400 bad payload, 401 no or wrong token, 408 body
                        not in within the body timeout, 413 over the size
                        limit, 503 shutting down or overloaded (the queue
                        full: with Retry-After), 504 still queued at the
                        deadline; errors are
                        {"error": one line, "reason": label}
    GET  /healthz       200 {"status": "ok"}, plus "fingerprint" and
                        "classes" to an authorized caller
    GET  /metrics       Prometheus text (`metrics`)

With a token, /v1/classify and /metrics need `Authorization: Bearer TOKEN`
(the scheme in any case, RFC 7235); /healthz stays open for load balancers
but names the model only to an authorized caller. A sender that hangs up
before its whole body is in is counted as a hang-up (`Metrics.hung_up`), not
answered and not logged. uvicorn runs on its own thread, so that the
process's main thread owns the signals; `stop` lets in-flight requests
finish before it returns. With a certificate it serves HTTPS, and with a
client CA it also requires each client's certificate (mutual TLS).

A slow client cannot hold the server: `HttpIngress` bounds the connections
(beyond, a request gets 503 at once), the time to send request headers and
the idle time between requests, and `make_app` the time to send a body.
"""

import asyncio
import hmac
import ssl
import threading
import time

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from tfvaeclf.errors import UserError
from tfvaeclf.serve import metrics as metrics_lib
from tfvaeclf.serve import url
from tfvaeclf.serve.batcher import NotQueued, outcome
from tfvaeclf.serve.core import Refusal

__all__ = ["HttpIngress", "make_app"]

INGRESS = "http"
_STATUS = {"bad_input": 400, "unauthorized": 401, "too_slow": 408,
           "too_large": 413, "shutting_down": 503, metrics_lib.SHED: 503,
           "deadline": 504, "internal": 500}
# Seconds a shed sender is told to wait before sending again.
RETRY_AFTER_SECONDS = 1
_HEADERS = {"unauthorized": {"WWW-Authenticate": "Bearer"},
            metrics_lib.SHED: {"Retry-After": str(RETRY_AFTER_SECONDS)},
            # The rest of a slow body is not worth waiting for.
            "too_slow": {"Connection": "close"}}
# What a hung-up request is answered (nginx's "client closed request"):
# nobody reads it, uvicorn drops it.
_HUNG_UP = 499


class _TooLarge(Exception):
  pass


async def _read_body(request, max_bytes):
  """The body, or _TooLarge as soon as it is known to exceed `max_bytes`."""
  declared = request.headers.get("content-length", "")
  if declared.isdigit() and int(declared) > max_bytes:
    raise _TooLarge
  chunks, size = [], 0
  async for chunk in request.stream():
    size += len(chunk)
    if size > max_bytes:
      raise _TooLarge
    chunks.append(chunk)
  return b"".join(chunks)


def _refused(refusal):
  return JSONResponse({"error": refusal.message, "reason": refusal.reason},
                      status_code=_STATUS[refusal.reason],
                      headers=_HEADERS.get(refusal.reason))


def make_app(core, batcher, metrics, token=None, max_bytes=65536,
             body_timeout=None):
  """The ASGI app of one core, its batcher and its metrics; a body not in
  within `body_timeout` seconds of its headers is refused (None: no
  limit)."""
  expected = token and token.encode()

  def authorized(request):
    """The bearer token matches; the scheme in any case (RFC 7235)."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    return not expected or (
        scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode("latin-1"), expected))

  async def reply_to(request):
    """The result or `Refusal` for a request; ClientDisconnect if its
    sender hangs up before the whole body is in."""
    if not authorized(request):
      return Refusal("unauthorized", "missing or wrong bearer token")
    try:
      future = batcher.submit(await asyncio.wait_for(
          _read_body(request, max_bytes), body_timeout))
    except _TooLarge:
      return Refusal("too_large", f"body over {max_bytes} bytes")
    except TimeoutError:
      return Refusal("too_slow", f"body not in within {body_timeout:g} s")
    except NotQueued as e:
      return Refusal(e.reason, str(e))
    await asyncio.wait([asyncio.wrap_future(future)])
    return outcome(future)

  async def classify(request):
    since = metrics.received(INGRESS)
    try:
      reply = await reply_to(request)
    except ClientDisconnect:
      metrics.hung_up(INGRESS)
      return Response(status_code=_HUNG_UP)
    except BaseException:
      metrics.answered(INGRESS, since)  # a bug or a cancellation
      raise
    metrics.answered(INGRESS, since, getattr(reply, "reason", None))
    if isinstance(reply, Refusal):
      return _refused(reply)
    return JSONResponse(reply)

  async def healthz(request):
    """Liveness for anyone; which model it serves to an authorized caller."""
    if not authorized(request):
      return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "ok", "fingerprint": core.fingerprint,
                         "classes": core.class_names})

  async def render_metrics(request):
    if not authorized(request):
      return _refused(Refusal("unauthorized", "missing or wrong bearer token"))
    return Response(metrics.render(), media_type=metrics_lib.CONTENT_TYPE)

  return Starlette(routes=[
      Route("/v1/classify", classify, methods=["POST"]),
      Route("/healthz", healthz, methods=["GET"]),
      Route("/metrics", render_metrics, methods=["GET"]),
  ])


def _tls_options(cert, key, client_ca):
  """uvicorn's TLS options: HTTPS with `cert` and `key`, and clients'
  certificates required if `client_ca` (PEM files; all None: plain HTTP)."""
  if not cert:
    return {}
  return {"ssl_certfile": cert, "ssl_keyfile": key,
          "ssl_ca_certs": client_ca,
          "ssl_cert_reqs": ssl.CERT_REQUIRED if client_ca else ssl.CERT_NONE}


def _load(config, tls_files):
  """Loads the config here, not on the server's thread, so that a TLS file
  that does not load is refused in one line."""
  try:
    config.load()
  except OSError as e:  # ssl.SSLError is one
    raise UserError(f"cannot load the HTTP TLS files {', '.join(tls_files)}: "
                    f"{e.strerror or e}") from None


def _header_timeout_protocol(seconds):
  """uvicorn's HTTP protocol, closing a connection that sends no complete
  request headers within `seconds` of opening, or of its first byte after
  an answer: uvicorn alone waits for them forever."""

  class HeaderTimeout(AutoHTTPProtocol):
    """The timer runs while the connection is between requests."""
    _timer = None

    def connection_made(self, transport):
      super().connection_made(transport)
      self._start_timer()

    def data_received(self, data):
      if self._timer is None and not self._in_request():
        self._start_timer()
      super().data_received(data)

    def on_response_complete(self):
      self._stop_timer()  # uvicorn's keep-alive timeout takes over
      super().on_response_complete()

    def connection_lost(self, exc):
      self._stop_timer()
      super().connection_lost(exc)

    def _in_request(self):
      """A request's headers are in, its answer not yet sent."""
      return self.cycle is not None and not self.cycle.response_complete

    def _start_timer(self):
      self._timer = self.loop.call_later(seconds, self._expire)

    def _stop_timer(self):
      if self._timer is not None:
        self._timer.cancel()
        self._timer = None

    def _expire(self):
      self._timer = None
      if not self._in_request():
        self.transport.close()

  return HeaderTimeout


def _limits(max_connections, header_timeout, keep_alive_timeout):
  """`uvicorn.Config`'s arguments for `HttpIngress`'s limits."""
  return {"limit_concurrency": max_connections,
          "timeout_keep_alive": keep_alive_timeout,
          "http": (_header_timeout_protocol(header_timeout)
                   if header_timeout else "auto")}


class HttpIngress:
  """uvicorn serving `app` on HOST:PORT from a thread of its own.

  Args:
    app: from `make_app`.
    host, port: where to listen.
    drain_seconds: how long `stop` waits for in-flight requests.
    max_connections: open connections (and requests) beyond which a request
      is answered 503 at once; None: no limit.
    header_timeout: seconds a connection has to send a request's headers
      (see `_header_timeout_protocol`); None: no limit.
    keep_alive_timeout: seconds an idle connection is kept after an answer.
    tls_cert, tls_key: PEM files: serve HTTPS.
    tls_client_ca: PEM file: also require clients' certificates signed by
      one of its CAs.
  """

  def __init__(self, app, host, port, drain_seconds=30, max_connections=None,
               header_timeout=None, keep_alive_timeout=5, tls_cert=None,
               tls_key=None, tls_client_ca=None):
    self.address = url("https" if tls_cert else "http", host, port)
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", access_log=False,
        log_level="warning", timeout_graceful_shutdown=drain_seconds,
        **_limits(max_connections, header_timeout, keep_alive_timeout),
        **_tls_options(tls_cert, tls_key, tls_client_ca))
    _load(config, [f for f in (tls_cert, tls_key, tls_client_ca) if f])
    self._server = uvicorn.Server(config)
    self._thread = threading.Thread(target=self._server.run, name="http",
                                    daemon=True)

  def start(self, timeout=30):
    """Returns once listening; UserError if it cannot (port taken, say)."""
    self._thread.start()
    deadline = time.monotonic() + timeout
    while not self._server.started:
      if not self._thread.is_alive() or time.monotonic() > deadline:
        raise UserError(f"cannot serve HTTP on {self.address} (see above)")
      time.sleep(0.02)
    return self

  def stop(self):
    """Stops listening and returns once in-flight requests are answered."""
    self._server.should_exit = True
    self._thread.join()
