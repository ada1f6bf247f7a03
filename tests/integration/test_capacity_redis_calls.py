"""The Redis round trips per request that the capacity plan (bench/capacity.py) counts, seen on real Redis.

The plan multiplies request rates by these counts; if the cache or the rate limits change how often
they call Redis, this test fails and the constants (and `make capacity`) must follow.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from bench import capacity
from tests.conftest import build_app, forget_keys


@pytest.fixture
def app(tmp_path: Path, redis_url: str) -> Iterator[Flask]:
    """SQLite, the Redis cache and the rate limits at their production values (two windows per rule)."""
    prefix = f"test:{os.getpid()}:{secrets.token_hex(4)}:"
    app = build_app(
        f"sqlite:///{tmp_path}/{time.time_ns()}.db",
        REDIS_URL=redis_url,
        CACHE_TYPE="RedisCache",
        CACHE_KEY_PREFIX=prefix,
        RATELIMIT_ENABLED=True,
    )
    try:
        yield app
    finally:
        forget_keys(redis_url, prefix)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Redis commands sent on any connection of this process, by name (script loads left out)."""
    seen: Counter[str] = Counter()
    send = redis.connection.Connection.send_command

    def counting(self: redis.connection.Connection, *args: Any, **options: Any) -> Any:
        name = str(args[0]).upper()
        if name not in ("SCRIPT LOAD", "SCRIPT", "CLIENT", "HELLO", "PING", "SELECT"):
            seen[name] += 1
        return send(self, *args, **options)

    monkeypatch.setattr(redis.connection.Connection, "send_command", counting)
    return seen


def _article(client: FlaskClient, headers: dict[str, str], title: str) -> str:
    body = {"article": {"title": title, "description": "d", "body": "b", "tagList": ["t"]}}
    resp = client.post("/api/articles", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return str(resp.json["article"]["slug"])  # type: ignore[index]


def test_redis_round_trips_per_request_are_those_the_capacity_plan_counts(app: Flask, calls: Counter[str]):
    client = app.test_client()
    body = {"user": {"username": "planner", "email": "planner@example.com", "password": "password123"}}
    token = client.post("/api/users", json=body).json["user"]["token"]  # type: ignore[index]
    headers = {"Authorization": f"Token {token}"}

    def trips(method: str, path: str, **kwargs: Any) -> int:
        calls.clear()
        resp = client.open(path, method=method, **kwargs)
        assert resp.status_code < 300, resp.get_data(as_text=True)
        return sum(calls.values())

    warm = _article(client, headers, "warm-up")  # loads every script once
    trips("GET", f"/api/articles/{warm}")
    trips("GET", "/api/articles/feed", headers=headers)
    trips("POST", f"/api/articles/{warm}/favorite", headers=headers)
    slug = _article(client, headers, "measured")

    fast_path_miss = capacity.REDIS_PER_MISS + 1
    counted_miss = fast_path_miss + capacity.REDIS_PER_STAMP  # a page with counts records their generations
    assert trips("GET", f"/api/articles/{slug}") == counted_miss  # the fast path's lookup, Flask's, the fill
    assert trips("GET", f"/api/articles/{slug}") == capacity.REDIS_PER_HIT
    assert trips("GET", "/api/articles/feed", headers=headers) == fast_path_miss  # signed in: the fast path too
    assert trips("GET", "/api/articles/feed", headers=headers) == capacity.REDIS_PER_HIT
    # A signed-in page: the first hit builds each of the viewer's sets (one call each), later hits read
    # them with the page.
    trips("GET", "/api/articles", headers=headers)  # the page's miss: flags by statement
    assert trips("GET", "/api/articles", headers=headers) == capacity.REDIS_PER_HIT + 1 + 2
    assert trips("GET", "/api/articles", headers=headers) == capacity.REDIS_PER_HIT
    write = capacity.REDIS_PER_WRITE_BUMP + capacity.RATE_LIMIT_CALLS_PER_WRITE
    comment = {"comment": {"body": "a comment"}}
    assert trips("POST", f"/api/articles/{slug}/comments", json=comment, headers=headers) == write
    assert trips("POST", f"/api/articles/{slug}/favorite", headers=headers) == write
    assert trips("DELETE", f"/api/articles/{slug}/favorite", headers=headers) == write
