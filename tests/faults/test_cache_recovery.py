"""The cache's recovery after a Redis failure, step by step and deterministic (two apps in-process).

The load tests (test_redis_outage.py) show the same under gunicorn; these pin
down the two rules that make it correct, without timing luck:
- a worker that saw Redis fail moves the epoch on before it trusts the cache
  again, so it cannot serve an entry whose invalidation another worker lost;
- an emptied Redis starts a new epoch above the old one, never reusing it.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from service.articles.cache_keys import article_gen
from service.caching.cache import EPOCH, SharedCache
from tests.conftest import Api, auth, build_app
from tests.faults.servers import ThrowawayRedis

pytestmark = pytest.mark.faults

BREAKER = 0.3


def _settings(redis_url: str) -> dict[str, Any]:
    """One Redis and one key prefix for every app of a test (think: workers)."""
    return {
        "REDIS_URL": redis_url,
        "CACHE_TYPE": "RedisCache",
        "CACHE_KEY_PREFIX": f"recovery:{secrets.token_hex(4)}:",
        "CACHE_BREAKER_SECONDS": BREAKER,
    }


def _app(tmp_path: Path, settings: dict[str, Any]) -> Flask:
    return build_app(f"sqlite:///{tmp_path}/db.sqlite", **settings)


def _cache(app: Flask) -> SharedCache:
    cache: SharedCache = app.extensions["shared_cache"]
    return cache


def test_a_worker_that_saw_redis_fail_serves_no_entry_whose_invalidation_was_lost(
    tmp_path: Path, redis_server: ThrowawayRedis
) -> None:
    settings = _settings(redis_server.url)
    prefix = settings["CACHE_KEY_PREFIX"]
    writer_app, reader_app = _app(tmp_path, settings), _app(tmp_path, settings)
    writer, reader = Api(writer_app.test_client()), Api(reader_app.test_client())
    token = writer.register("writer")
    slug = writer.create_article(token, "Watched", body="v1")["slug"]
    other = writer.create_article(token, "Other", body="o1")["slug"]
    assert reader.client.get(f"/api/articles/{slug}").json["article"]["body"] == "v1"
    hits = _cache(reader_app).stats["hits"]
    assert reader.client.get(f"/api/articles/{slug}").json["article"]["body"] == "v1"
    assert _cache(reader_app).stats["hits"] == hits + 1  # the old version is cached
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    gen_before = admin.get(prefix + "g:" + article_gen(slug))

    redis_server.freeze()
    try:
        # The first failed bump may sit in a socket buffer and be applied on SIGCONT;
        # the next ones cannot even connect (redis-py's handshake times out): lost.
        for path, body in ((f"/api/articles/{other}", "o2"), (f"/api/articles/{slug}", "v2")):
            reply = writer.client.put(path, json={"article": {"body": body}}, headers=auth(token))
            assert reply.status_code == 200
        assert reader.client.get(f"/api/articles/{slug}").json["article"]["body"] == "v2"  # from the database
    finally:
        redis_server.thaw()
    time.sleep(BREAKER * 2)  # both breakers have closed; the writer stays idle

    assert article_gen(slug) in _cache(writer_app)._pending  # its invalidation has still not reached Redis
    assert admin.get(prefix + "g:" + article_gen(slug)) == gen_before  # so the old entry is current there
    misses = _cache(reader_app).stats["misses"]
    assert reader.client.get(f"/api/articles/{slug}").json["article"]["body"] == "v2"
    assert _cache(reader_app).stats["misses"] == misses + 1  # it used the cache, under a new epoch
    assert reader.client.get(f"/api/articles/{slug}").json["article"]["body"] == "v2"
    admin.close()


def test_an_emptied_redis_starts_a_new_epoch_above_the_old_one(tmp_path: Path, redis_server: ThrowawayRedis) -> None:
    settings = _settings(redis_server.url)
    prefix = settings["CACHE_KEY_PREFIX"]
    old_app = _app(tmp_path, settings)
    client = old_app.test_client()
    assert client.get("/api/tags").status_code == 200
    admin = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    before = int(admin.get(prefix + "g:" + EPOCH) or 0)
    assert before > 10**15  # microseconds from Redis's clock, not a count from 0

    redis_server.kill()
    redis_server.start()
    admin.connection_pool.reset()
    # A worker that never talked to the old Redis: its first lookup sets the epoch.
    new_app = _app(tmp_path, settings)
    assert new_app.test_client().get("/api/tags").status_code == 200
    fresh = int(admin.get(prefix + "g:" + EPOCH) or 0)
    assert fresh > before
    # The worker whose connections died with the old Redis (redis-py reconnects them
    # quietly) reads what the new one stored, under the new epoch.
    hits = _cache(old_app).stats["hits"]
    assert client.get("/api/tags").status_code == 200
    assert _cache(old_app).stats["hits"] == hits + 1
    assert [key.decode().rsplit(":", 1)[1].split(".")[0] for key in admin.keys(prefix + "t:*")] == [str(fresh)]
    admin.close()
