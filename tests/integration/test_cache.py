"""The shared cache and HTTP caching: never stale, per-viewer facts never shared,
Redis trouble never the users' trouble, 304s without the database."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import gevent
import redis
from flask import Flask

from service.caching.cache import SharedCache, get_cache
from tests.conftest import Api, auth, build_app, count_statements, scratch_database
from tests.live import free_port, live_server


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def _register(base: str, name: str) -> str:
    status, body = _call(
        base, "POST", "/api/users", {"user": {"username": name, "email": f"{name}@x.io", "password": "password123"}}
    )
    assert status == 201, body
    return str(body["user"]["token"])


def test_no_read_started_after_an_acknowledged_write_is_stale(redis_url: str) -> None:
    """Readers hammer one article through two workers while a writer updates it; every
    read that began after write N was acknowledged must show version N or later."""
    with scratch_database("conduit_stale") as url, live_server(url, workers=2, REDIS_URL=redis_url) as base:
        token = _register(base, "writer")
        status, created = _call(
            base, "POST", "/api/articles", {"article": {"title": "Race", "description": "d", "body": "v0"}}, token
        )
        assert status == 201
        path = f"/api/articles/{created['article']['slug']}"
        acknowledged = 0
        stop = threading.Event()
        stale: list[tuple[int, int]] = []
        reads = [0]

        def reader() -> None:
            while not stop.is_set():
                floor = acknowledged
                status, body = _call(base, "GET", path)
                assert status == 200
                seen = int(body["article"]["body"][1:])
                reads[0] += 1
                if seen < floor:
                    stale.append((floor, seen))

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(reader) for _ in range(8)]
            for version in range(1, 61):
                status, _ = _call(base, "PUT", path, {"article": {"body": f"v{version}"}}, token)
                assert status == 200
                acknowledged = version
                time.sleep(0.005)
            stop.set()
            for future in futures:
                future.result()
    assert reads[0] > 100
    assert stale == []


def test_favorited_is_never_shared_between_viewers(api: Api) -> None:
    author = api.register("author")
    fan = api.register("fan")
    slug = api.create_article(author, "Shared")["slug"]
    assert api.client.get(f"/api/articles/{slug}").json["article"]["favorited"] is False  # fills the cache
    api.client.post(f"/api/articles/{slug}/favorite", headers=auth(fan))
    as_fan = api.client.get(f"/api/articles/{slug}", headers=auth(fan)).json["article"]
    as_author = api.client.get(f"/api/articles/{slug}", headers=auth(author)).json["article"]
    anonymous = api.client.get(f"/api/articles/{slug}").json["article"]
    assert (as_fan["favorited"], as_author["favorited"], anonymous["favorited"]) == (True, False, False)
    assert as_fan["favoritesCount"] == as_author["favoritesCount"] == anonymous["favoritesCount"] == 1
    listed = api.client.get("/api/articles", headers=auth(fan)).json["articles"][0]
    assert listed["favorited"] is True
    assert api.client.get("/api/articles").json["articles"][0]["favorited"] is False


def test_cached_values_are_json_bytes_not_pickle(redis_url: str, pg_url: str) -> None:
    app = build_app(pg_url, REDIS_URL=redis_url, CACHE_TYPE="RedisCache")
    api = Api(app.test_client())
    token = api.register(f"u{time.time_ns()}")
    slug = api.create_article(token, "Stored")["slug"]
    api.client.get(f"/api/articles/{slug}")
    client = redis.Redis.from_url(redis_url)
    prefix = app.config["CACHE_KEY_PREFIX"]
    keys = [k for k in client.scan_iter(match=prefix + "a2:*")]
    assert keys, "the article was not cached"
    for key in keys:
        value = client.get(key)
        assert value is not None, key
        ids, _, body = value[1:].partition(b"\n")  # "=" marks bytes; then the ids line and the body
        assert json.loads(ids)["a"] and json.loads(body)["article"]["slug"] == slug, value[:80]
        assert client.ttl(key) > 0
    gen_keys = list(client.scan_iter(match=prefix + "g:*"))
    assert gen_keys and all(client.ttl(k) > 0 for k in gen_keys)
    app.extensions["shared_cache"].backend.clear()


def test_a_cached_anonymous_read_and_its_304_touch_no_database(app: Flask, api: Api) -> None:
    slug = api.create_article(api.register("author"), "Cached")["slug"]
    first = api.client.get(f"/api/articles/{slug}")
    etag = first.headers["ETag"]
    with count_statements(app) as statements:
        again = api.client.get(f"/api/articles/{slug}")
        not_modified = api.client.get(f"/api/articles/{slug}", headers={"If-None-Match": etag})
    assert statements == []
    assert again.get_data() == first.get_data()
    assert not_modified.status_code == 304 and not_modified.get_data() == b""


def test_etag_changes_after_a_write_and_304_only_while_unchanged(api: Api) -> None:
    token = api.register("author")
    slug = api.create_article(token, "Versioned")["slug"]
    etag = api.client.get(f"/api/articles/{slug}").headers["ETag"]
    api.client.put(f"/api/articles/{slug}", json={"article": {"body": "new"}}, headers=auth(token))
    after = api.client.get(f"/api/articles/{slug}", headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.json["article"]["body"] == "new"
    assert after.headers["ETag"] != etag


def test_cache_control_says_revalidate_for_reads_and_no_store_for_writes(api: Api) -> None:
    token = api.register("author")
    created = api.client.post(
        "/api/articles", json={"article": {"title": "T", "description": "d", "body": "b"}}, headers=auth(token)
    )
    assert created.headers["Cache-Control"] == "no-store"
    article = api.client.get(f"/api/articles/{created.json['article']['slug']}")
    assert article.headers["Cache-Control"] == "private, no-cache"
    assert "Authorization" in article.headers["Vary"]
    tags = api.client.get("/api/tags")
    assert tags.headers["Cache-Control"] == "public, no-cache"
    assert tags.headers["ETag"].startswith('"')  # strong
    error = api.client.get("/api/articles/missing")
    assert error.headers["Cache-Control"] == "no-store"


def test_if_match_guards_updates_against_lost_writes(api: Api) -> None:
    token = api.register("author")
    slug = api.create_article(token, "Guarded")["slug"]
    etag = api.client.get(f"/api/articles/{slug}", headers=auth(token)).headers["ETag"]
    ok = api.client.put(
        f"/api/articles/{slug}", json={"article": {"body": "one"}}, headers={**auth(token), "If-Match": etag}
    )
    assert ok.status_code == 200
    stale = api.client.put(
        f"/api/articles/{slug}", json={"article": {"body": "two"}}, headers={**auth(token), "If-Match": etag}
    )
    assert stale.status_code == 412
    assert stale.json == {"errors": {"body": [stale.json["errors"]["body"][0]]}}
    assert api.client.get(f"/api/articles/{slug}").json["article"]["body"] == "one"


def test_concurrent_misses_for_one_key_share_one_load(app: Flask) -> None:
    loads = []

    def load() -> bytes:
        loads.append(1)
        gevent.sleep(0.05)
        return b'{"x":1}'

    with app.app_context():
        cache = get_cache()
        greenlets = [gevent.spawn(cache.fetch, ("stampede", ["g1"]), load) for _ in range(20)]
        gevent.joinall(greenlets, timeout=5)
    assert [g.value for g in greenlets] == [b'{"x":1}'] * 20
    assert len(loads) == 1


@contextmanager
def blackhole() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung Redis)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_a_hung_redis_costs_one_timeout_per_breaker_period(pg_url: str) -> None:
    with blackhole() as port:
        app = build_app(
            pg_url, REDIS_URL=f"redis://127.0.0.1:{port}/0", CACHE_TYPE="RedisCache", CACHE_BREAKER_SECONDS=30
        )
        client = app.test_client()
        started = time.monotonic()
        statuses = [client.get("/api/tags").status_code for _ in range(50)]
        elapsed = time.monotonic() - started
        cache: SharedCache = app.extensions["shared_cache"]
    assert statuses == [200] * 50
    assert cache.stats["errors"] == 1  # the breaker kept the other 49 away from Redis
    assert elapsed < 2.5  # one 0.1 s timeout, not 50 (5x margin over ~0.5 s)


def test_writes_and_reads_succeed_while_redis_is_hung_behind_gunicorn(pg_url: str) -> None:
    with (
        blackhole() as port,
        scratch_database("conduit_hung") as url,
        live_server(url, workers=2, REDIS_URL=f"redis://127.0.0.1:{port}/0") as base,
    ):
        token = _register(base, "survivor")
        started = time.monotonic()
        results = [
            _call(
                base,
                "POST",
                "/api/articles",
                {"article": {"title": f"t{i}", "description": "d", "body": "b"}},
                token,
            )[0]
            for i in range(10)
        ]
        results += [_call(base, "GET", "/api/articles")[0] for _ in range(40)]
        elapsed = time.monotonic() - started
    assert results == [201] * 10 + [200] * 40
    assert elapsed < 10


def test_redis_port_closed_means_database_reads_not_errors(pg_url: str) -> None:
    app = build_app(pg_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", CACHE_TYPE="RedisCache")
    api = Api(app.test_client())
    token = api.register(f"u{time.time_ns()}")
    slug = api.create_article(token, "No cache")["slug"]
    assert api.client.get(f"/api/articles/{slug}").status_code == 200
    assert (
        api.client.put(f"/api/articles/{slug}", json={"article": {"body": "x"}}, headers=auth(token)).status_code == 200
    )
    assert api.client.get(f"/api/articles/{slug}").json["article"]["body"] == "x"
    assert app.extensions["shared_cache"].stats["errors"] >= 1


def test_an_invalidation_that_could_not_reach_redis_is_sent_before_the_next_read(redis_url: str, pg_url: str) -> None:
    """Redis stops taking writes (CLIENT PAUSE) just as an update commits: the bump times
    out, but the worker keeps it and sends it before it reads the cache again."""
    app = build_app(pg_url, REDIS_URL=redis_url, CACHE_TYPE="RedisCache", CACHE_BREAKER_SECONDS=0.2)
    api = Api(app.test_client())
    token = api.register(f"u{time.time_ns()}")
    slug = api.create_article(token, "Paused", body="old")["slug"]
    assert api.client.get(f"/api/articles/{slug}").json["article"]["body"] == "old"  # cached
    admin = redis.Redis.from_url(redis_url)
    admin.execute_command("CLIENT", "PAUSE", 600, "WRITE")
    try:
        updated = api.client.put(f"/api/articles/{slug}", json={"article": {"body": "new"}}, headers=auth(token))
    finally:
        time.sleep(0.7)  # the pause and the breaker period both end
    cache: SharedCache = app.extensions["shared_cache"]
    assert updated.status_code == 200
    assert cache.stats["bump_failures"] >= 1
    assert api.client.get(f"/api/articles/{slug}").json["article"]["body"] == "new"
    app.extensions["shared_cache"].backend.clear()
