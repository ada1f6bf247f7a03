"""HTTP caching: strong ETags, 304s, and Cache-Control that never allows a stale read.

Every successful GET gets a strong ETag (hash of the body) and is answered 304
when `If-None-Match` matches; a cached anonymous read is answered from the
shared cache without touching the database. Bodies that depend on the token
are `private` and vary on Authorization; all reads must revalidate
(`no-cache`), so a client never uses a copy older than the last write.
Anything else is `no-store`.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, request
from werkzeug.wrappers import Response

# Declared by the operations that honour If-Match (see `@endpoint(headers=...)`).
IF_MATCH_PARAMETER: dict[str, Any] = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "The `ETag` of the resource as you last read it (e.g. from GET). The change is made only if "
    "nobody changed the resource since; otherwise the answer is 412 and nothing changes. `*` matches any version.",
}


def _viewer_dependent() -> bool:
    if request.url_rule is None:
        return False
    op = getattr(current_app.view_functions.get(request.url_rule.endpoint), "__openapi__", None)
    return op is not None and op.auth != "none"


def _cache_headers(resp: Response) -> Response:
    if "no-store" in resp.headers.get("Cache-Control", ""):  # the view said so (health checks, metrics)
        return resp
    if request.method not in ("GET", "HEAD") or resp.status_code != 200:
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp
    if resp.direct_passthrough or resp.headers.get("ETag"):  # static files bring their own validators
        return resp
    if _viewer_dependent():
        resp.headers["Cache-Control"] = "private, no-cache"
        resp.vary.add("Authorization")
    else:
        resp.headers["Cache-Control"] = "public, no-cache"
    if request.url_rule is not None and request.url_rule.endpoint in current_app.extensions.get(
        "encoded_endpoints", ()
    ):
        resp.vary.add("Accept-Encoding")  # the cache's fast path may send these gzip (service.caching.encoding)
    resp.add_etag()
    return resp.make_conditional(request)


def init_app(app: Flask) -> None:
    app.after_request(_cache_headers)
