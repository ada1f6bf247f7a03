"""Structured logs: one JSON object per line, an access line per request, request ids.

Every request gets an id: the caller's `X-Request-Id` when it is sane (1-128
characters of `[A-Za-z0-9._:+/=-]`, as proxies and tracing systems generate),
otherwise a new one. It is echoed in the `X-Request-Id` response header and
carried by every log line written while the request runs (errors included).

The access line holds what ops need and nothing a client sent as a secret:
never headers (Authorization, Cookie), bodies or query strings. Handlers and
destinations are configured by the process (gunicorn.conf.py `logconfig_dict`):
the app only emits records.
"""

from __future__ import annotations

import functools
import ipaddress
import itertools
import logging
import os
import re
import secrets
import time
from contextvars import ContextVar
from typing import Any

import orjson
from flask import Flask, Request, Response, current_app, g, request

from config import ConfigError

access_log = logging.getLogger("service.access")

REQUEST_ID_HEADER = "X-Request-Id"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
# Longest path written to a log line; the request line is limited to 4094 bytes by gunicorn anyway.
MAX_LOGGED_PATH = 1024

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)


@functools.lru_cache(maxsize=4)
def _utc_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts (UTC), level, logger, msg, pid, request_id, extra `fields`, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": f"{_utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "pid": record.process,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            out["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


class AddressList:
    """A set of networks (comma-separated CIDRs or addresses); `*` matches every address."""

    def __init__(self, spec: str, setting: str) -> None:
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        self.any = "*" in parts
        try:
            self.networks = [ipaddress.ip_network(p, strict=False) for p in parts if p != "*"]
        except ValueError as exc:
            raise ConfigError(f"{setting}={spec!r}: {exc}") from exc
        self._seen: dict[str, bool] = {}

    def __contains__(self, address: str) -> bool:
        hit = self._seen.get(address)
        if hit is None:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                hit = False
            else:
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped
                hit = self.any or any(ip in network for network in self.networks)
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[address] = hit
        return hit


class _Ids:
    """New request ids: a random prefix per process (re-drawn after fork) and a counter.
    Unique without a system call per request; ids name requests, they are not secrets."""

    def __init__(self) -> None:
        self.pid = -1
        self.prefix = ""
        self.counter = itertools.count()

    def next(self) -> str:
        if self.pid != os.getpid():
            self.pid, self.prefix, self.counter = os.getpid(), secrets.token_hex(8), itertools.count()
        return f"{self.prefix}{next(self.counter):08x}"


_ids = _Ids()


def request_id_from(header: str | None) -> str:
    """The caller's request id when it is sane, else a new one (24 hex digits)."""
    if header is not None and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return _ids.next()


def client_address(environ: dict[str, Any], proxies: AddressList) -> str:
    """The client's address: the peer, or, when the peer is a trusted proxy, the
    rightmost X-Forwarded-For entry that is not itself a trusted proxy."""
    peer: str = environ.get("REMOTE_ADDR") or ""
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if not forwarded or peer not in proxies:
        return peer
    client = peer
    for hop in reversed(forwarded.split(",")):
        hop = hop.strip()
        if not _is_address(hop):  # garbage or a port: trust nothing left of it
            break
        client = hop
        if hop not in proxies:
            break
    return client


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# Where `_begin` keeps the request's start (perf_counter seconds) in the WSGI environ.
STARTED = "conduit.started"


def _begin() -> None:
    environ = request.environ
    environ[STARTED] = time.perf_counter()
    request_id_var.set(request_id_from(environ.get("HTTP_X_REQUEST_ID")))


_endpoint_labels: dict[str, str] = {}
_PARAM = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")
UNMATCHED = "unmatched"  # the endpoint of requests no route matched (404/405)


def endpoint_label(req: Request) -> str:
    """The route template of `req` as in the OpenAPI document (`/api/articles/{slug}`), never the raw path."""
    rule = req.url_rule
    if rule is None:
        return UNMATCHED
    return route_template(rule.rule)


def route_template(rule: str) -> str:
    """A werkzeug rule (`/api/articles/<slug:slug>`) as the OpenAPI template (`/api/articles/{slug}`)."""
    label = _endpoint_labels.get(rule)
    if label is None:
        label = _endpoint_labels[rule] = _PARAM.sub(r"{\1}", rule)
    return label


def elapsed(req: Request) -> float:
    """Seconds since `req` reached the app."""
    started = req.environ.get(STARTED)
    return time.perf_counter() - started if started is not None else 0.0


def current_request() -> Request:
    """The request object itself: one context lookup instead of one per attribute (hot path)."""
    return request._get_current_object()  # type: ignore[attr-defined,no-any-return]


def _finish(resp: Response) -> Response:
    resp.headers.add(REQUEST_ID_HEADER, request_id_var.get() or request_id_from(None))
    if access_log.isEnabledFor(logging.INFO):
        req = current_request()
        size = resp.content_length
        log_access(
            req.method,
            req.path,
            endpoint_label(req),
            resp.status_code,
            elapsed(req),
            size if size is not None else resp.calculate_content_length(),
            client_address(req.environ, current_app.extensions["trusted_proxies"]),
            g.get("user_id"),
        )
    return resp


def log_access(
    method: str,
    path: str,
    endpoint: str,
    status: int,
    seconds: float,
    size: int | None,
    client: str,
    user_id: int | None = None,
) -> None:
    """The access line of one answered request (`endpoint` a route template, never the raw path)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "request",
        extra={
            "fields": {
                "method": method,
                "path": path[:MAX_LOGGED_PATH],
                "endpoint": endpoint,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
                "bytes": size,
                "client": client,
                "user_id": user_id,
            }
        },
    )


def init_app(app: Flask) -> None:
    """Request ids and the access line. Register before other hooks: Flask runs
    after_request functions in reverse order, so `_finish` sees the final response."""
    app.extensions["trusted_proxies"] = AddressList(app.config["FORWARDED_ALLOW_IPS"], "FORWARDED_ALLOW_IPS")
    app.before_request(_begin)
    app.after_request(_finish)
