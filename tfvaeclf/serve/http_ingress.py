"""The HTTP ingress: Starlette on uvicorn.

    POST /v1/classify   body: a payload (see `core`) -> 200 JSON result
                        400 bad payload, 401 no or wrong token, 413 over the
                        size limit, 503 shutting down; errors are
                        {"error": one line, "reason": label}
    GET  /healthz       200 {"status": "ok", "fingerprint", "classes"}
    GET  /metrics       Prometheus text (`metrics`)

With a token, /v1/classify and /metrics need `Authorization: Bearer TOKEN`;
/healthz stays open for load balancers. uvicorn runs on its own thread, so
that the process's main thread owns the signals; `stop` lets in-flight
requests finish before it returns.
"""

import asyncio
import hmac
import threading
import time

from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
import uvicorn

from tfvaeclf.errors import UserError
from tfvaeclf.serve import metrics as metrics_lib
from tfvaeclf.serve.batcher import ShuttingDown, outcome
from tfvaeclf.serve.core import Refusal

__all__ = ["HttpIngress", "make_app"]

INGRESS = "http"
_STATUS = {"bad_input": 400, "unauthorized": 401, "too_large": 413,
           "shutting_down": 503, "internal": 500}


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
  expected = token and f"Bearer {token}".encode()

  def authorized(request):
    given = request.headers.get("authorization", "").encode()
    return not expected or hmac.compare_digest(given, expected)

  async def classify(request):
    since = metrics.received(INGRESS)
    reply = None
    try:
      if not authorized(request):
        reply = Refusal("unauthorized", "missing or wrong bearer token")
      else:
        future = batcher.submit(await _read_body(request, max_bytes))
        await asyncio.wait([asyncio.wrap_future(future)])
        reply = outcome(future)
    except _TooLarge:
      reply = Refusal("too_large", f"body over {max_bytes} bytes")
    except ShuttingDown as e:
      reply = Refusal("shutting_down", str(e))
    finally:
      metrics.answered(INGRESS, since, getattr(reply, "reason", None))
    if isinstance(reply, Refusal):
      return _refused(reply)
    return JSONResponse(reply)

  async def healthz(request):
    del request
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


class HttpIngress:
  """uvicorn serving `app` on HOST:PORT from a thread of its own."""

  def __init__(self, app, host, port, drain_seconds=30):
    self.address = f"http://{host}:{port}"
    self._server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, lifespan="off", access_log=False,
        log_level="warning", timeout_graceful_shutdown=drain_seconds))
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
