"""The server boards send to: one decode-and-classify core, two ingresses.

    python -m tfvaeclf.serve --bundle=BUNDLE [--http=HOST:PORT]
        [--mqtt=HOST:PORT [--mqtt_shared=GROUP]] [--token=T | --token_file=F]

`core.Core` is the only part that knows payloads and the model; `batcher`
groups concurrent payloads into one core call; `http_ingress` and
`mqtt_ingress` receive payloads and answer them; `metrics` counts them.
"""
