"""Cache hits without the framework: anonymous cached reads answered ahead of Flask's dispatch.

A cached anonymous GET (an article, a list page, a profile, the tag cloud, a page of comments)
costs one Redis round trip, but going through Flask's request context, hooks and view costs
several times that in Python. `FastPath` wraps `app.wsgi_app`: it matches the path with a URL
adapter bound once at start-up, builds the same cache key the view would (`ROUTES`: each domain
declares its cacheable reads with `fastpath.serve(...)` in its own cache_keys.py), looks it up with
the same generation discipline (`SharedCache.lookup`) and
answers a hit with what Flask would have sent: status, body bytes, ETag, Cache-Control, Vary,
security headers, X-Request-Id, a 304 for a matching If-None-Match, no body for HEAD; it records
the request metrics and the access line through the same functions as the after_request hooks.

A signed-in hit is answered here too when the token was verified by this worker within
TOKEN_RECHECK_SECONDS (service.security.auth keeps that table) and the viewer's flags came from
their sets in the same round trip (service.caching.personalize): the body is the entry with the
viewer's flags set, hashed for its ETag.

Anything it is not sure about goes to Flask unchanged: a miss (Flask fills the entry), Redis
trouble or an open breaker, a token this worker has not verified lately, a viewer set to build,
an Origin while
CORS is configured, a query the view would refuse, other methods, conditional headers other than
If-None-Match, a non-ASCII path or query, a process that is draining.

One answer it gives that is not a hit: when every Redis connection of the worker stayed busy for
CACHE_POOL_WAIT, the read is shed here with the API's 503 (Retry-After), as Flask's view would shed
it; passing it on would only wait for the pool a second time.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import msgspec
from flask import Flask
from werkzeug.exceptions import HTTPException
from werkzeug.http import generate_etag, http_date, parse_etags, quote_etag
from werkzeug.routing import Rule

from service.api.errors import Overloaded, api_error_response
from service.api.headers import CSP_API, SECURITY_HEADERS
from service.caching import encoding
from service.caching.cache import SharedCache
from service.caching.personalize import Fact, render, split
from service.runtime import lifecycle, logs, metrics
from service.security import auth

log = logging.getLogger(__name__)

KeyAndGens = tuple[str, list[str]]
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# Headers that ask for more than the whole representation: Flask decides those (412, 206 ...).
_FALL_THROUGH_HEADERS = (
    "HTTP_IF_MATCH",
    "HTTP_IF_MODIFIED_SINCE",
    "HTTP_IF_UNMODIFIED_SINCE",
    "HTTP_IF_RANGE",
    "HTTP_RANGE",
)

# Bodies whose ETag a worker remembers (a list page is ~10-20 KB, so a few MB at most).
ETAG_MEMO = 256
# Paths whose route a worker remembers.
ROUTE_MEMO = 4096


# (path values, parsed query, the stored entry, a URL builder for this endpoint) -> (the entry without what
# the domain put in front of it, extra headers). The rest is the facts header and the body.
Split = Callable[[Mapping[str, Any], Any, bytes, Callable[..., str]], tuple[bytes, list[tuple[str, str]]]]


@dataclass(frozen=True)
class Route:
    """How the view of one endpoint keys its cache entry, and how it answers from it."""

    # (path values, parsed query, viewer id or None) -> key and generations
    key: Callable[[Mapping[str, Any], Any, int | None], KeyAndGens]
    query: type | None = None  # the msgspec type the view parses its query with (None: it reads no query)
    cache_control: str = "public, no-cache"
    vary: str | None = None
    # For an entry the domain stores more in front of (e.g. a count that makes a Link header).
    split: Split | None = None
    facts: tuple[Fact, ...] = ()  # the per-viewer facts the entry may name
    signed_in: bool = False  # the view requires a token (an anonymous request goes to Flask for its 401)


# Endpoint -> Route, declared by the domains (`serve`); each key must be the one the view's service uses.
# Routes with `auth="optional"` answer `private` and vary on Authorization (service.api.httpcache).
ROUTES: dict[str, Route] = {}


def serve(endpoint: str, route: Route) -> None:
    """Declare that anonymous cache hits of `endpoint` may be answered ahead of Flask, as `route` says."""
    if ROUTES.setdefault(endpoint, route) is not route:
        raise ValueError(f"{endpoint} is declared twice for the cache fast path")


@functools.lru_cache(maxsize=2)
def _date(second: int) -> str:
    return http_date(second)


class FastPath:
    """WSGI middleware: answer anonymous cache hits of `ROUTES` before Flask; pass everything else on."""

    def __init__(self, wsgi_app: WSGIApp, app: Flask, cache: SharedCache) -> None:
        self.app = wsgi_app
        self.cache = cache
        self.adapter = app.url_map.bind("localhost")  # once: binding per request is what Flask pays for
        # The same paths come again and again (a hot article, the first page): routing them once is enough.
        self._match = functools.lru_cache(maxsize=ROUTE_MEMO)(self._route)
        self.cors = bool(app.extensions["cors_origins"])
        self.proxies = app.extensions["trusted_proxies"]
        self.verified = app.extensions["verified_tokens"]  # service.security.auth's table of checked tokens
        self.recheck = float(app.config["TOKEN_RECHECK_SECONDS"])
        # ETags of recently served bodies by versioned key; the body is compared before reuse (a
        # versioned key can be filled twice). At most ETAG_MEMO entries, holding their bodies.
        self._etags: dict[str, tuple[bytes, str]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        try:
            answer = self._answer(environ)
        except Exception:  # a bug here must not cost the request: Flask can still answer it
            log.exception("the cache fast path failed; passing the request to Flask")
            answer = None
        if answer is None:
            return self.app(environ, start_response)
        status, headers, body = answer
        start_response(status, headers)
        return [body]

    def _answer(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """(status line, headers, body to send) for a hit this middleware may answer; None otherwise."""
        started = time.perf_counter()
        method = environ["REQUEST_METHOD"]
        if method != "GET" and method != "HEAD":
            return None
        if any(name in environ for name in _FALL_THROUGH_HEADERS):
            return None
        viewer: int | None = None
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None:
            viewer = auth.recently_verified(self.verified, self.recheck, authorization)
            if viewer is None:
                return None
        if (self.cors and "HTTP_ORIGIN" in environ) or environ.get("SCRIPT_NAME") or lifecycle.is_draining():
            return None
        path = environ.get("PATH_INFO") or "/"
        query_string = environ.get("QUERY_STRING", "")
        if not (path.isascii() and query_string.isascii()):
            return None
        matched = self._match(path, method)
        if matched is None:
            return None
        rule, values = matched
        route = ROUTES.get(rule.endpoint)
        if route is None or any("\x00" in v for v in values.values() if isinstance(v, str)):
            return None
        if (route.signed_in and viewer is None) or (viewer is not None and route.vary is None):
            return None
        query = _parse_query(route.query, query_string) if route.query is not None else None
        if route.query is not None and query is None:
            return None
        key = route.key(values, query, viewer)
        gzip = viewer is None and encoding.accepts_gzip(environ.get("HTTP_ACCEPT_ENCODING"))
        try:
            found = self.cache.lookup(key, viewer, route.facts, gzip)
        except Overloaded as err:
            return self._shed(environ, rule, err, started)
        if found is None:
            return None
        versioned, entry, flags, numbers, gzipped = found
        extra: list[tuple[str, str]] = []
        if route.split is not None:
            entry, extra = route.split(values, query, entry, partial(self.adapter.build, rule.endpoint, method="GET"))
        if gzipped:
            _, line, body = split(entry)
            etag = encoding.etag_of(line)
            extra.append(("Content-Encoding", "gzip"))
        elif flags or numbers:
            body = render(entry, viewer, route.facts, flags, numbers)
            etag = quote_etag(generate_etag(body))
        else:
            body = split(entry)[2]
            etag = self._etag(versioned, body)
        self.cache.count_fast_path()

        request_id = logs.request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        logs.request_id_var.set(request_id)
        not_modified = _matches(environ.get("HTTP_IF_NONE_MATCH"), etag)
        headers: list[tuple[str, str]] = []
        if not not_modified:
            headers.append(("Content-Type", "application/json"))
            headers.append(("Content-Length", str(len(body))))
        headers.extend(extra)
        headers.extend(SECURITY_HEADERS.items())
        headers.append(("Content-Security-Policy", CSP_API))
        headers.append(("Cache-Control", route.cache_control))
        headers.append(("Vary", f"{route.vary}, Accept-Encoding" if route.vary else "Accept-Encoding"))
        headers.append(("ETag", etag))
        headers.append(("Date", _date(int(time.time()))))
        headers.append(("X-Request-Id", request_id))

        status = 304 if not_modified else 200
        seconds = time.perf_counter() - started
        label = logs.route_template(rule.rule)
        metrics.observe_request(label, method, status, seconds)
        if logs.access_log.isEnabledFor(logging.INFO):
            client = logs.client_address(environ, self.proxies)
            logs.log_access(method, path, label, status, seconds, len(body), client)
        if not_modified:
            return "304 NOT MODIFIED", headers, b""
        return "200 OK", headers, body if method == "GET" else b""

    def _route(self, path: str, method: str) -> tuple[Rule, Mapping[str, Any]] | None:
        """The rule and path values `path` matches (the values are shared: read them, never change them)."""
        try:
            rule, values = self.adapter.match(path, method, return_rule=True)
        except HTTPException:
            return None
        assert isinstance(rule, Rule) and rule.endpoint is not None
        return rule, values

    def _shed(
        self, environ: dict[str, Any], rule: Rule, err: Overloaded, started: float
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """The 503 Flask would send for `err` (the API's error shape, Retry-After, no-store)."""
        response = api_error_response(err)
        body = response.get_data()
        request_id = logs.request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        logs.request_id_var.set(request_id)
        headers = [(name, value) for name, value in response.headers.items()]
        headers.extend(SECURITY_HEADERS.items())
        headers.append(("Content-Security-Policy", CSP_API))
        headers.append(("Date", _date(int(time.time()))))
        headers.append(("X-Request-Id", request_id))
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO") or "/"
        seconds = time.perf_counter() - started
        label = logs.route_template(rule.rule)
        metrics.observe_request(label, method, 503, seconds)
        if logs.access_log.isEnabledFor(logging.INFO):
            client = logs.client_address(environ, self.proxies)
            logs.log_access(method, path, label, 503, seconds, len(body), client)
        return "503 SERVICE UNAVAILABLE", headers, body if method == "GET" else b""

    def _etag(self, versioned: str, body: bytes) -> str:
        """The strong ETag Flask gives `body` (httpcache: hash of the body), computed once per entry."""
        known = self._etags.get(versioned)
        if known is not None and known[0] == body:
            return known[1]
        etag = quote_etag(generate_etag(body))
        if len(self._etags) >= ETAG_MEMO:
            self._etags.clear()
        self._etags[versioned] = (body, etag)
        return etag


def _parse_query(kind: type, query_string: str) -> Any:
    """The query as the view parses it (first value of each name, msgspec's lax conversion); None if refused."""
    args: dict[str, str] = {}
    for name, value in parse_qsl(query_string, keep_blank_values=True, errors="werkzeug.url_quote"):
        args.setdefault(name, value)
    try:
        return msgspec.convert(args, kind, strict=False)
    except msgspec.ValidationError:
        return None


def _matches(if_none_match: str | None, etag: str) -> bool:
    """True when If-None-Match names `etag` (weak comparison, as werkzeug's make_conditional does)."""
    if not if_none_match:
        return False
    return parse_etags(if_none_match).contains_weak(etag.strip('"'))


def install(app: Flask, cache: SharedCache) -> None:
    """Wrap the app's WSGI callable, keeping the Flask object reachable (Flask's documented pattern).

    The routes it serves may answer gzip: their responses from Flask say `Vary: Accept-Encoding` too
    (service.api.httpcache reads `encoded_endpoints`)."""
    app.wsgi_app = FastPath(app.wsgi_app, app, cache)  # type: ignore[method-assign]
    app.extensions["encoded_endpoints"] = frozenset(ROUTES)
