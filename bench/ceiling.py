"""The framework-free ceiling: a bare WSGI app answering a fixed 200-byte JSON.

Served by the benchmark (bench/run.py) under the service's own gunicorn config twice:
with gunicorn's stock gevent worker (`gunicorn -c gunicorn.conf.py --worker-class gevent
bench.ceiling:app`, the fixed "reference") and with the service's worker (the "ceiling").
Each measures what gunicorn + gevent + the HTTP client can do on this machine with no
Flask, no database and no cache, so each scenario can be read as a fraction of both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

_PAD = 200 - len(b'{"ok":true,"pad":""}')
BODY = b'{"ok":true,"pad":"' + b"x" * _PAD + b'"}'
assert len(BODY) == 200

HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", HEADERS)
    return [BODY]
