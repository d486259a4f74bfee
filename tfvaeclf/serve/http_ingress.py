"""The HTTP ingress: Starlette on uvicorn.

    POST /v1/classify   body: a payload (see `core`) -> 200 JSON result
                        400 bad payload, 401 no or wrong token, 413 over the
                        size limit, 503 shutting down; errors are
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

from tfvaeclf.errors import UserError
from tfvaeclf.serve import metrics as metrics_lib
from tfvaeclf.serve import url
from tfvaeclf.serve.batcher import ShuttingDown, outcome
from tfvaeclf.serve.core import Refusal

__all__ = ["HttpIngress", "make_app"]

INGRESS = "http"
_STATUS = {"bad_input": 400, "unauthorized": 401, "too_large": 413,
           "shutting_down": 503, "internal": 500}
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
                      headers=({"WWW-Authenticate": "Bearer"}
                               if refusal.reason == "unauthorized" else None))


def make_app(core, batcher, metrics, token=None, max_bytes=65536):
  """The ASGI app of one core, its batcher and its metrics."""
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
      future = batcher.submit(await _read_body(request, max_bytes))
    except _TooLarge:
      return Refusal("too_large", f"body over {max_bytes} bytes")
    except ShuttingDown as e:
      return Refusal("shutting_down", str(e))
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


class HttpIngress:
  """uvicorn serving `app` on HOST:PORT from a thread of its own; HTTPS with
  `tls_cert` and `tls_key`, requiring clients' certificates signed by a CA
  of `tls_client_ca` if given (PEM files)."""

  def __init__(self, app, host, port, drain_seconds=30, tls_cert=None,
               tls_key=None, tls_client_ca=None):
    self.address = url("https" if tls_cert else "http", host, port)
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="off", access_log=False,
        log_level="warning", timeout_graceful_shutdown=drain_seconds,
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
