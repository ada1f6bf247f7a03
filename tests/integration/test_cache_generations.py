"""Generation counters never go backwards: not when one expires, is evicted or is
lost, on the in-process cache and on Redis. A counter that restarted from 0 would
climb back to a number an old entry is still stored under, and a read after an
acknowledged write would get that old entry.

In-process, generations used to live among the entries with their TTL; they now
live in their own bounded dict and do not expire. The tests reach them through
`_has_generation` and `_lose_generation`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cachelib.simple
import pytest
import redis
from flask import Flask

from service.articles.cache_keys import article_gen
from service.caching.cache import SharedCache
from tests.conftest import Api, auth, build_app


class FakeClock:
    """Stands in for the in-process cache's `time()`, so expiry takes no waiting and no luck."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _cache(app: Flask) -> SharedCache:
    cache: SharedCache = app.extensions["shared_cache"]
    return cache


def _update(api: Api, token: str, slug: str, body: str) -> None:
    reply = api.client.put(f"/api/articles/{slug}", json={"article": {"body": body}}, headers=auth(token))
    assert reply.status_code == 200, reply.get_data(as_text=True)


def _body(api: Api, slug: str) -> str:
    return str(api.client.get(f"/api/articles/{slug}").json["article"]["body"])  # type: ignore[index]


def _has_generation(app: Flask, name: str) -> bool:
    cache = _cache(app)
    if cache._bump is None:  # in-process
        return name in cache._local_gens
    return cache.backend.get("g:" + name) is not None


def _lose_generation(app: Flask, name: str) -> None:
    """What an eviction does (Redis's maxmemory, the in-process bound) or any other loss."""
    cache = _cache(app)
    if cache._bump is None:
        del cache._local_gens[name]
    else:
        assert cache.backend.delete("g:" + name)


def _cached_article_pages(app: Flask) -> int:
    """Article pages the in-process cache holds (SimpleCache keys carry no prefix)."""
    return sum(1 for key in _cache(app).backend._cache if key.startswith("a2:"))


def test_a_generation_that_expired_in_process_does_not_bring_back_an_old_article(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the fix an in-process counter expired with the entries' TTL and restarted from 0."""
    clock = FakeClock()
    monkeypatch.setattr(cachelib.simple, "time", clock)
    app = build_app(f"sqlite:///{tmp_path}/expiry.db", CACHE_DEFAULT_TIMEOUT=2)
    api = Api(app.test_client())
    token = api.register("author")
    slug = api.create_article(token, "Ageing", body="v0")["slug"]
    # Entries live 2 s. Each first read after a write fills the cache late in the
    # life the counter had before the fix, so the entry outlived that counter.
    _update(api, token, slug, "v1")
    clock.advance(1.5)
    assert _body(api, slug) == "v1"
    clock.advance(1.0)
    _update(api, token, slug, "v2")
    assert _body(api, slug) == "v2"
    clock.advance(1.5)
    assert _body(api, slug) == "v2"
    clock.advance(1.0)
    _update(api, token, slug, "v3")
    assert _body(api, slug) == "v3"


def test_a_generation_evicted_in_process_does_not_bring_back_an_old_article(
    tmp_path: Path,
) -> None:
    app = build_app(f"sqlite:///{tmp_path}/eviction.db", CACHE_THRESHOLD=20)
    cache = _cache(app)
    api = Api(app.test_client())
    token = api.register("author")
    slug = api.create_article(token, "Crowded", body="v0")["slug"]
    name = article_gen(slug)
    _update(api, token, slug, "v1")
    for i in range(8):  # writes to other articles, while the page of this one is not cached
        cache.bump([article_gen(f"other-{i}")])
    assert _body(api, slug) == "v1"
    for i in range(8, 500):  # more writes elsewhere, until the bound drops this article's counter
        if not _has_generation(app, name):
            break
        cache.bump([article_gen(f"other-{i}")])
    assert not _has_generation(app, name), "the counter was never evicted"
    assert _cached_article_pages(app) == 1  # while the page stored under it is still cached
    _update(api, token, slug, "v2")
    assert _body(api, slug) == "v2"


@pytest.fixture(params=["in-process", "redis"])
def any_backend_app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flask]:
    """An app on the in-process cache (SQLite) or on Redis (PostgreSQL)."""
    if request.param == "in-process":
        yield build_app(f"sqlite:///{tmp_path}/lost.db")
        return
    redis_url = request.getfixturevalue("redis_url")
    app = build_app(request.getfixturevalue("pg_url"), CACHE_TYPE="RedisCache", REDIS_URL=redis_url)
    yield app
    _cache(app).backend.clear()  # this app's prefix only


def test_a_generation_lost_while_its_entries_live_does_not_bring_back_an_old_article(any_backend_app: Flask) -> None:
    app = any_backend_app
    api = Api(app.test_client())
    token = api.register(f"author{time.time_ns()}")
    slug = api.create_article(token, "Forgotten", body="v0")["slug"]
    _update(api, token, slug, "v1")
    assert _body(api, slug) == "v1"  # cached under the counter's current value
    _lose_generation(app, article_gen(slug))
    _update(api, token, slug, "v2")
    assert _body(api, slug) == "v2"


def test_a_generation_that_expired_in_redis_does_not_bring_back_an_old_article(redis_url: str, pg_url: str) -> None:
    app = build_app(pg_url, CACHE_TYPE="RedisCache", REDIS_URL=redis_url)
    api = Api(app.test_client())
    token = api.register(f"author{time.time_ns()}")
    slug = api.create_article(token, "Expiring", body="v0")["slug"]
    _update(api, token, slug, "v1")
    assert _body(api, slug) == "v1"
    admin = redis.Redis.from_url(redis_url)
    gen_key = app.config["CACHE_KEY_PREFIX"] + "g:" + article_gen(slug)
    try:
        assert admin.pexpire(gen_key, 1)
        time.sleep(0.05)
        assert admin.exists(gen_key) == 0
        _update(api, token, slug, "v2")
        assert _body(api, slug) == "v2"
    finally:
        _cache(app).backend.clear()
        admin.close()


def test_in_process_generations_keep_rising_when_the_wall_clock_steps_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = build_app(f"sqlite:///{tmp_path}/clock.db")
    cache = _cache(app)
    cache.bump(["x"])
    first = cache.generations(["x"])
    assert first is not None and first[0] > 10**15  # microseconds, not a count from 0
    real = time.time_ns()
    monkeypatch.setattr(time, "time_ns", lambda: real - 3600 * 10**9)  # an hour back
    _lose_generation(app, "x")
    again = cache.generations(["x"])
    assert again is not None and again[0] > first[0]
    cache.bump(["x"])
    bumped = cache.generations(["x"])
    assert bumped is not None and bumped[0] > again[0]
