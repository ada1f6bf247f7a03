"""Assertions shared by the integration tests."""

from __future__ import annotations

from typing import Any


def error_messages(resp: Any, status: int) -> list[str]:
    """Assert `resp` is an error with `status` in the API's one shape; its messages."""
    assert resp.status_code == status, resp.get_data(as_text=True)
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"errors"}
    assert set(body["errors"]) == {"body"}
    messages = body["errors"]["body"]
    assert isinstance(messages, list)
    assert messages
    assert all(isinstance(m, str) and m for m in messages)
    return list(messages)


def served_fast(app: Any) -> int:
    """Answers the cache's fast path gave so far (service.caching.fastpath)."""
    return int(app.extensions["shared_cache"].stats["fastpath"])


def header_list(resp: Any) -> list[tuple[str, str]]:
    """The response's headers in order, the Date's value left out (it moves with the clock)."""
    return [(name, "<date>" if name == "Date" else value) for name, value in resp.headers.to_wsgi_list()]
