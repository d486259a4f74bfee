"""The server boards send to: one decode-and-classify core, two ingresses.

    python -m tfvaeclf.serve --bundle=BUNDLE [--http=HOST:PORT]
        [--mqtt=HOST:PORT [--mqtt_shared=GROUP]] [--http_token_file=F]
        [--mqtt_password_file=F] [--http_tls_cert=F --http_tls_key=F]
        [--mqtt_tls_ca=F]

`core.Core` is the only part that knows payloads and the model; `batcher`
groups concurrent payloads into one core call; `http_ingress` and
`mqtt_ingress` receive payloads and answer them; `metrics` counts them.
"""

__all__ = ["url"]


def url(scheme, host, port):
  """scheme://host:port, an IPv6 host in brackets (RFC 3986)."""
  return f"{scheme}://[{host}]:{port}" if ":" in host else (
      f"{scheme}://{host}:{port}")
