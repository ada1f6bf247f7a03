"""Overload must not turn into more load: a busy Redis pool sheds reads (503) instead of sending
them to the database, and concurrent misses of one key cost one load across workers and replicas."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import gevent
import pytest
from flask import Flask

from service.caching.cache import SharedCache
from tests.conftest import Api, build_app, count_statements, forget_keys


@pytest.fixture
def shared_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test:overload:{secrets.token_hex(4)}:"
    yield prefix
    forget_keys(redis_url, prefix)


def _app(pg_url: str, redis_url: str, prefix: str, **overrides: object) -> Flask:
    return build_app(pg_url, REDIS_URL=redis_url, CACHE_TYPE="RedisCache", CACHE_KEY_PREFIX=prefix, **overrides)


def test_a_busy_redis_pool_sheds_reads_and_never_sends_them_to_the_database(
    pg_url: str, redis_url: str, shared_prefix: str
) -> None:
    # Threads, not greenlets: the tests run without gevent's monkey patching, so a greenlet waiting
    # in the pool's queue would block the whole thread; threads contend for the one connection for real.
    app = _app(pg_url, redis_url, shared_prefix, CACHE_MAX_CONNECTIONS=1, CACHE_POOL_WAIT=0.05)
    api = Api(app.test_client())
    token = api.register("shedder")
    api.create_article(token, title="Hot")
    cache: SharedCache = app.extensions["shared_cache"]
    for path in ("/api/articles", "/api/tags"):  # warm: both entries are cached
        assert app.test_client().get(path).status_code == 200
    pool = cache.backend._write_client.connection_pool
    statuses: list[int] = []
    shed: list[tuple[str | None, object]] = []

    def reader(path: str) -> None:
        client = app.test_client()
        for _ in range(5):
            resp = client.get(path)
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                shed.append((resp.headers.get("Retry-After"), resp.json))

    with count_statements(app) as statements:
        held = pool.get_connection()
        threads = [threading.Thread(target=reader, args=(p,)) for p in ("/api/articles", "/api/tags") * 8]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        pool.release(held)
        for thread in threads:
            thread.join(10)
    assert statements == []  # no read went to the database
    assert len(statuses) == 80 and set(statuses) <= {200, 503}
    assert 503 in statuses
    assert all(retry == "1" and list(body) == ["errors"] for retry, body in shed)  # type: ignore[arg-type]
    assert cache.stats["errors"] == 0  # a busy pool is not a Redis failure: the breaker stays closed
    assert cache.stats["pool_busy"] == statuses.count(503)  # each shed waited for the pool once, not twice


def test_concurrent_misses_of_one_key_in_two_workers_cost_one_load(
    pg_url: str, redis_url: str, shared_prefix: str
) -> None:
    apps = [_app(pg_url, redis_url, shared_prefix) for _ in range(2)]  # two workers (or replicas)
    calls: list[int] = []

    def load() -> bytes:
        calls.append(1)
        gevent.sleep(0.2)
        return b'{"slow":%d}' % len(calls)

    def read(app: Flask) -> bytes:
        with app.app_context():
            return app.extensions["shared_cache"].fetch(("overload", ["g"]), load)  # type: ignore[no-any-return]

    greenlets = [gevent.spawn(read, apps[i % 2]) for i in range(20)]
    gevent.joinall(greenlets, timeout=10)
    assert [g.value for g in greenlets] == [b'{"slow":1}'] * 20
    assert len(calls) == 1


def test_a_winner_that_fails_does_not_block_the_others(pg_url: str, redis_url: str, shared_prefix: str) -> None:
    apps = [_app(pg_url, redis_url, shared_prefix, CACHE_FILL_WAIT=0.5) for _ in range(2)]
    calls: list[int] = []

    def load() -> bytes:
        calls.append(1)
        first = len(calls) == 1
        gevent.sleep(0.1)
        if first:
            raise RuntimeError("the winner died")
        return b'{"ok":1}'

    def read(app: Flask) -> bytes | str:
        with app.app_context():
            try:
                return app.extensions["shared_cache"].fetch(("overload", ["g"]), load)  # type: ignore[no-any-return]
            except RuntimeError as exc:
                return str(exc)

    started = time.monotonic()
    winner = gevent.spawn(read, apps[0])
    gevent.sleep(0.02)  # the winner holds the fill lock
    others = [gevent.spawn(read, apps[1]) for _ in range(9)]
    gevent.joinall([winner, *others], timeout=10)
    elapsed = time.monotonic() - started
    assert winner.value == "the winner died"
    assert [g.value for g in others] == [b'{"ok":1}'] * 9
    assert elapsed < 2  # no hang
    assert len(calls) == 2


def test_a_dead_winner_that_keeps_its_lock_delays_the_others_by_one_bound(
    pg_url: str, redis_url: str, shared_prefix: str
) -> None:
    app = _app(pg_url, redis_url, shared_prefix, CACHE_FILL_WAIT=0.3)
    cache: SharedCache = app.extensions["shared_cache"]
    with app.app_context():
        found = cache._find(("overload", ["g"]))
        assert found is not None and found[1] is None
        # A worker that took the fill lock and was killed: its lock would outlive the bound.
        cache.backend._write_client.set(shared_prefix + "fill:" + found[0], b"dead", px=10_000)
    calls: list[int] = []

    def load() -> bytes:
        calls.append(1)
        return b'{"ok":1}'

    def read() -> bytes:
        with app.app_context():
            return cache.fetch(("overload", ["g"]), load)

    started = time.monotonic()
    greenlets = [gevent.spawn(read) for _ in range(5)]
    gevent.joinall(greenlets, timeout=10)
    elapsed = time.monotonic() - started
    assert [g.value for g in greenlets] == [b'{"ok":1}'] * 5
    assert len(calls) == 1  # the worker's own single flight still holds
    assert 0.25 < elapsed < 2  # waited about one bound, then loaded
