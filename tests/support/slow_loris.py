"""Slow-loris clients: raw HTTP connections that send their request 1 byte
a second and hold the server's connections while they do. The server must
drop them at its header and body timeouts. `tests/test_serve_load.py` and
`tools/bench_serve.py` share them.
"""

import selectors
import socket
import threading
import time

__all__ = ["SlowLoris", "request_head"]

BODY_BYTES = 1000
# How long the sending thread waits at most before it looks at `join`.
POLL_SECONDS = 0.1


def request_head(port, length):
  """The head of a classify request with a `length`-byte body."""
  return (f"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
          f"Content-Length: {length}\r\n\r\n").encode()


class SlowLoris:
  """`count` raw connections to 127.0.0.1:`port`, sending 1 byte a second
  from one thread: half their request headers, half (after whole headers)
  their body.

  Records each connection the server closes in `closed`: (its kind,
  "headers" or "body"; the seconds it was open; what the server said).
  With `reconnect`, each is replaced at once by a new one of its kind, so
  that `count` hold the server until `join`.
  """

  def __init__(self, port, count, reconnect=False):
    self.closed = []
    self._port, self._reconnect = port, reconnect
    self._selector = selectors.DefaultSelector()
    self._stop = threading.Event()
    self._open = {}  # socket -> [kind, bytes still to send, start, said]
    for i in range(count):
      self._connect("headers" if i % 2 else "body")
    self._thread = threading.Thread(target=self._run, daemon=True)
    self._thread.start()

  def _connect(self, kind):
    sock = socket.create_connection(("127.0.0.1", self._port))
    head = request_head(self._port, BODY_BYTES)
    first, rest = ((b"", head) if kind == "headers" else
                   (head, bytes(BODY_BYTES)))
    sock.sendall(first)
    sock.setblocking(False)
    self._open[sock] = [kind, rest, time.monotonic(), b""]
    self._selector.register(sock, selectors.EVENT_READ)

  def _run(self):
    next_byte = time.monotonic()
    while self._open and not self._stop.is_set():
      if time.monotonic() >= next_byte:
        next_byte += 1.
        for sock, state in list(self._open.items()):
          try:
            sock.send(state[1][:1])
            state[1] = state[1][1:]
          except OSError:
            self._dropped(sock)
      wait = min(POLL_SECONDS, max(0., next_byte - time.monotonic()))
      for key, _ in self._selector.select(wait):
        self._read(key.fileobj)

  def _read(self, sock):
    try:
      chunk = sock.recv(4096)
    except OSError:  # reset by the server
      chunk = b""
    if chunk:
      self._open[sock][3] += chunk
    else:
      self._dropped(sock)

  def _dropped(self, sock):
    kind, _, start, said = self._close(sock)
    self.closed.append((kind, time.monotonic() - start, said))
    if self._reconnect:
      self._connect(kind)

  def _close(self, sock):
    self._selector.unregister(sock)
    sock.close()
    return self._open.pop(sock)

  def join(self, timeout=0.):
    """Waits up to `timeout` seconds for the server to close every
    connection (never done with `reconnect`), then closes the others."""
    self._thread.join(timeout)
    self._stop.set()
    self._thread.join()
    for sock in list(self._open):
      self._close(sock)
