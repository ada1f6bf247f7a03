"""Headers every response carries: browser security headers, and CORS only where configured.

Security headers (OWASP REST Security Cheat Sheet): `nosniff` so a browser never runs a JSON body
as a script or page, `X-Frame-Options: DENY` and CSP `frame-ancestors 'none'` against
clickjacking, `Referrer-Policy: no-referrer`. JSON gets `default-src 'none'` (nothing in it may
load or run). The Swagger UI page at /api/docs loads its own script, styles and inline SVGs from
this service, so its policy only forbids framing, plugins and <base>; it keeps working.

CORS: `CORS_ORIGINS` (comma-separated `scheme://host[:port]`, or `*`) lists the browser origins
that may call the API. Unset means no CORS header at all, so browsers allow same-origin only. An
allowed origin gets `Access-Control-Allow-Origin` (its own value, with `Vary: Origin`; or `*`),
and preflights get the URL's methods and the request headers the API reads. Credentials are
never allowed: the token travels in the Authorization header, not in a cookie, so no caller needs
them, and `*` with credentials would hand every site the user's session.

OPTIONS: Flask answers it for every routed URL with an empty `text/html` 200; it becomes a 204 with
`Allow` and no body or content type, preflight or not (a preflight only needs a 2xx).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, current_app, request
from werkzeug.wrappers import Response

from config import ConfigError

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
CSP_API = "default-src 'none'; frame-ancestors 'none'"
CSP_HTML = "frame-ancestors 'none'; object-src 'none'; base-uri 'none'"

# What a cross-origin caller may send and read: the token, JSON bodies, conditional requests
# and idempotent retries; ETag (for If-Match), Retry-After (after a 503 or 429), replay marks,
# Link (the next page of comments).
ALLOW_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match, Idempotency-Key"
EXPOSE_HEADERS = "ETag, Retry-After, WWW-Authenticate, Idempotent-Replayed, X-Request-Id, Link"
# Seconds a browser may reuse a preflight answer.
PREFLIGHT_MAX_AGE = "600"


def parse_origins(value: str) -> frozenset[str]:
    """The allowed origins in `CORS_ORIGINS`; ConfigError for anything that is not an origin."""
    origins = frozenset(part.strip().rstrip("/") for part in value.split(",") if part.strip())
    if "*" in origins:
        if len(origins) > 1:
            raise ConfigError("CORS_ORIGINS is either * or a list of origins, not both")
        return origins
    for origin in origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path or parts.query:
            raise ConfigError(f"CORS_ORIGINS: {origin!r} is not an origin like https://app.example.com")
    return origins


def _security_headers(resp: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    csp = CSP_HTML if resp.mimetype == "text/html" else CSP_API
    resp.headers.setdefault("Content-Security-Policy", csp)
    return resp


def _options(resp: Response) -> Response:
    # Flask's automatic answer: 200, empty, text/html by default, with the URL's methods in Allow.
    if request.method == "OPTIONS" and resp.status_code == 200 and "Allow" in resp.headers and not resp.data:
        resp.status_code = 204
        del resp.headers["Content-Type"]
    return resp


def _cors(resp: Response) -> Response:
    origins: frozenset[str] = current_app.extensions["cors_origins"]
    origin = request.headers.get("Origin")
    if not origins or origin is None:
        return resp
    if "*" in origins:
        resp.headers["Access-Control-Allow-Origin"] = "*"
    elif origin in origins:
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.vary.add("Origin")
    else:
        resp.vary.add("Origin")  # the answer differs by origin, so caches must keep them apart
        return resp
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        # Flask answered the OPTIONS itself (made a 204 by _options), with the URL's methods in Allow
        # (none on a 404).
        if resp.status_code == 204 and "Allow" in resp.headers:
            resp.headers["Access-Control-Allow-Methods"] = resp.headers["Allow"]
            resp.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
            resp.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
    else:
        resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return resp


def init_app(app: Flask) -> None:
    app.extensions["cors_origins"] = parse_origins(app.config["CORS_ORIGINS"])
    # after_request functions run last-registered first: _options, then _security_headers, then _cors.
    app.after_request(_cors)
    app.after_request(_security_headers)
    app.after_request(_options)
