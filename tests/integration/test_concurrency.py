"""Races against a real gunicorn + gevent server as production runs it: a fresh PostgreSQL
database, the Redis cache (whatever the environment says) and two workers.

Clients are OS threads with urllib, so requests really overlap on the server;
every test checks the database afterwards, not just the responses.
"""

from __future__ import annotations

import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from threading import Barrier
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import scratch_database
from tests.live import live_server, server_stack

pytestmark = pytest.mark.postgres


@dataclass
class Reply:
    status: int
    body: Any


class Server:
    def __init__(self, base: str, engine: Engine) -> None:
        self.base = base
        self.engine = engine

    def call(self, method: str, path: str, payload: Any = None, token: str | None = None) -> Reply:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base + "/api" + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if token is not None:
            request.add_header("Authorization", f"Token {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                raw = resp.read()
                status = resp.status
        except urllib.error.HTTPError as err:
            raw = err.read()
            status = err.code
        return Reply(status, json.loads(raw) if raw else None)

    def register(self, username: str, email: str | None = None) -> Reply:
        user = {"username": username, "email": email or f"{username}@example.com", "password": "password123"}
        return self.call("POST", "/users", {"user": user})

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()


def redis_env(redis_url: str, database_url: str) -> dict[str, str]:
    # Cache keys of this throwaway database must not meet another run's in a shared Redis.
    return {
        "REDIS_URL": redis_url,
        "CACHE_TYPE": "RedisCache",
        "CACHE_KEY_PREFIX": f"test:{make_url(database_url).database}:",
    }


@pytest.fixture(scope="module")
def server(redis_url: str) -> Iterator[Server]:
    with scratch_database("conduit_race") as url, live_server(url, workers=2, **redis_env(redis_url, url)) as base:
        assert server_stack(base) == ("ok", 2)
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
        try:
            yield Server(base, engine)
        finally:
            engine.dispose()


def all_at_once(tasks: Iterable[Callable[[], Reply]], threads: int) -> list[Reply]:
    """Run `tasks` on `threads` client threads that start together."""
    tasks = list(tasks)
    barrier = Barrier(min(threads, len(tasks)))

    def run(task: Callable[[], Reply], index: int) -> Reply:
        if index < barrier.parties:
            barrier.wait(timeout=30)
        return task()

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(run, tasks, range(len(tasks))))


def register_many(server: Server, usernames: list[str]) -> dict[str, str]:
    replies = all_at_once([lambda u=u: server.register(u) for u in usernames], threads=10)
    assert [r.status for r in replies] == [201] * len(usernames), [r.body for r in replies if r.status != 201]
    return {r.body["user"]["username"]: r.body["user"]["token"] for r in replies}


def create_article(server: Server, token: str, title: str) -> str:
    reply = server.call("POST", "/articles", {"article": {"title": title, "description": "d", "body": "b"}}, token)
    assert reply.status == 201, reply.body
    return str(reply.body["article"]["slug"])


def favorite_rows(server: Server, slug: str) -> int:
    return int(
        server.scalar(
            "SELECT COUNT(*) FROM favorites f JOIN articles a ON a.id = f.article_id WHERE a.slug = :slug", slug=slug
        )
    )


def test_mixed_concurrent_favorites_by_twenty_users_leave_the_count_equal_to_the_rows(server: Server) -> None:
    tokens = register_many(server, [f"fan{i}" for i in range(20)])
    slug = create_article(server, tokens["fan0"], "Much loved")
    rng = random.Random(20)
    operations = [(token, rng.choice(["POST", "DELETE"])) for token in tokens.values() for _ in range(12)]
    rng.shuffle(operations)

    replies = all_at_once(
        [lambda t=t, m=m: server.call(m, f"/articles/{slug}/favorite", token=t) for t, m in operations],
        threads=20,
    )

    statuses = Counter(r.status for r in replies)
    assert statuses == {200: len(operations)}, statuses
    assert all(0 <= r.body["article"]["favoritesCount"] <= 20 for r in replies)
    rows = favorite_rows(server, slug)
    article = server.call("GET", f"/articles/{slug}")
    assert article.status == 200
    assert article.body["article"]["favoritesCount"] == rows
    assert server.scalar("SELECT favorites_count FROM articles WHERE slug = :slug", slug=slug) == rows
    # Each user's own view agrees with the rows too.
    views = [server.call("GET", f"/articles/{slug}", token=t).body["article"] for t in tokens.values()]
    assert sum(view["favorited"] for view in views) == rows


def test_a_hundred_identical_concurrent_favorites_by_one_user_make_one_row(server: Server) -> None:
    token = register_many(server, ["eager"])["eager"]
    slug = create_article(server, token, "Click me")

    replies = all_at_once([lambda: server.call("POST", f"/articles/{slug}/favorite", token=token)] * 100, threads=100)

    assert Counter(r.status for r in replies) == {200: 100}
    assert {r.body["article"]["favoritesCount"] for r in replies} == {1}
    assert all(r.body["article"]["favorited"] for r in replies)
    assert favorite_rows(server, slug) == 1
    assert server.call("GET", f"/articles/{slug}").body["article"]["favoritesCount"] == 1


def test_thirty_concurrent_articles_with_one_title_get_thirty_distinct_slugs(server: Server) -> None:
    token = register_many(server, ["prolific"])["prolific"]
    article = {"article": {"title": "Same Title", "description": "d", "body": "b", "tagList": ["dup"]}}

    replies = all_at_once([lambda: server.call("POST", "/articles", article, token)] * 30, threads=30)

    assert [r.status for r in replies] == [201] * 30, [r.body for r in replies if r.status != 201]
    slugs = [r.body["article"]["slug"] for r in replies]
    assert len(set(slugs)) == 30
    assert slugs.count("same-title") == 1
    assert all(s == "same-title" or s.startswith("same-title-") for s in slugs)
    assert server.scalar("SELECT COUNT(*) FROM articles WHERE title = 'Same Title'") == 30
    assert server.scalar("SELECT COUNT(*) FROM article_tags WHERE tag = 'dup'") == 30


def test_concurrent_registrations_of_one_username_create_exactly_one_account(server: Server) -> None:
    attempts = [lambda i=i: server.register("highlander", f"h{i}@example.com") for i in range(20)]
    replies = all_at_once(attempts, threads=20)

    statuses = Counter(r.status for r in replies)
    assert statuses == {201: 1, 422: 19}, statuses
    winner = next(r for r in replies if r.status == 201)
    assert winner.body["user"]["username"] == "highlander"
    for reply in replies:
        if reply.status == 422:
            assert reply.body == {"errors": {"body": ["username has already been taken"]}}
    assert server.scalar("SELECT COUNT(*) FROM users WHERE username = 'highlander'") == 1
    assert server.scalar("SELECT email FROM users WHERE username = 'highlander'") == winner.body["user"]["email"]


def test_concurrent_renames_to_one_username_give_it_to_exactly_one_user(server: Server) -> None:
    tokens = register_many(server, [f"renamer{i}" for i in range(10)])
    replies = all_at_once(
        [lambda t=t: server.call("PUT", "/user", {"user": {"username": "the-one"}}, t) for t in tokens.values()],
        threads=10,
    )

    statuses = Counter(r.status for r in replies)
    assert statuses == {200: 1, 422: 9}, statuses
    assert all(r.body == {"errors": {"body": ["username has already been taken"]}} for r in replies if r.status == 422)
    assert server.scalar("SELECT COUNT(*) FROM users WHERE username = 'the-one'") == 1
    # The nine others kept their names.
    assert server.scalar("SELECT COUNT(*) FROM users WHERE username LIKE 'renamer%'") == 9


def test_fifty_identical_concurrent_follows_make_one_row(server: Server) -> None:
    tokens = register_many(server, ["idol", "stalker"])

    replies = all_at_once(
        [lambda: server.call("POST", "/profiles/idol/follow", token=tokens["stalker"])] * 50, threads=50
    )

    assert Counter(r.status for r in replies) == {200: 50}
    assert all(r.body["profile"]["following"] for r in replies)
    rows = "SELECT COUNT(*) FROM follows f JOIN users u ON u.id = f.followee_id WHERE u.username = 'idol'"
    assert server.scalar(rows) == 1


def test_a_request_waiting_on_a_database_lock_does_not_stall_its_worker(redis_url: str) -> None:
    """One worker: while a favorite waits on a row lock, the same process still answers others."""
    with scratch_database("conduit_stall") as url, live_server(url, workers=1, **redis_env(redis_url, url)) as base:
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
        server = Server(base, engine)
        try:
            token = register_many(server, ["waiter"])["waiter"]
            slug = create_article(server, token, "Locked")
            with ThreadPoolExecutor(max_workers=1) as pool, engine.connect() as locker:
                with locker.begin():
                    locker.execute(text("SELECT id FROM articles WHERE slug = :slug FOR UPDATE"), {"slug": slug})
                    pending = pool.submit(server.call, "POST", f"/articles/{slug}/favorite", None, token)
                    wait_for_lock_waiter(engine)

                    health = urllib.request.urlopen(base + "/healthz", timeout=10)  # the same, only worker
                    tags = server.call("GET", "/tags")  # needs a second database connection

                    assert health.status == 200
                    assert tags.status == 200
                    assert not pending.done(), "the worker answered only after the lock was released"
                    health.close()
                favorite = pending.result(timeout=30)
            assert favorite.status == 200, favorite.body
            assert favorite.body["article"]["favoritesCount"] == 1
        finally:
            engine.dispose()


def wait_for_lock_waiter(engine: Engine, seconds: float = 10) -> None:
    """Block until a backend of the service is waiting on a lock."""
    deadline = time.monotonic() + seconds
    query = text(
        "SELECT COUNT(*) FROM pg_stat_activity"
        " WHERE application_name = 'conduit' AND wait_event_type = 'Lock' AND datname = current_database()"
    )
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(query).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("the favorite request never waited on the row lock")


# Every counter of migration 0005 next to what COUNT(*) says, as (scope, kept, counted) where they differ.
COUNTER_DRIFT = """
    WITH counted AS (
        SELECT 'all' AS scope, COUNT(*) AS n FROM articles
        UNION ALL SELECT 'author:' || author_id, COUNT(*) FROM articles GROUP BY author_id
        UNION ALL SELECT 'favorited:' || user_id, COUNT(*) FROM favorites GROUP BY user_id
        UNION ALL SELECT 'tag:' || tag, COUNT(*) FROM article_tags GROUP BY tag
    ), kept AS (
        SELECT scope, n FROM article_counts UNION ALL SELECT 'tag:' || tag, n FROM tag_counts
    )
    SELECT COALESCE(json_agg(json_build_array(scope, kept.n, counted.n)), '[]')
    FROM kept FULL JOIN counted USING (scope)
    WHERE COALESCE(kept.n, 0) <> COALESCE(counted.n, 0)
"""


def test_concurrent_creates_deletes_and_favorites_leave_every_counter_equal_to_count_star(server: Server) -> None:
    """Counters move in the writes' own transactions, in an order that cannot deadlock: many writers
    on the same counters ('all', shared tags, one reader's favorites) all commit, and agree with the rows."""
    tokens = register_many(server, [f"counted{i}" for i in range(8)])
    names = list(tokens)
    rng = random.Random(5)
    tag_sets = [["shared"], ["shared", "x"], ["x", "y"], ["y", "shared", "z"], []]

    def create(name: str, n: int) -> Reply:
        article = {"title": f"Counted {name} {n}", "description": "d", "body": "b", "tagList": rng.choice(tag_sets)}
        return server.call("POST", "/articles", {"article": article}, tokens[name])

    # Articles to favorite and to delete, by every author.
    first = all_at_once([lambda name=name, n=n: create(name, n) for name in names for n in range(3)], threads=12)
    assert [r.status for r in first] == [201] * len(first), [r.body for r in first if r.status != 201]
    articles = [(r.body["article"]["slug"], r.body["article"]["author"]["username"]) for r in first]
    doomed = articles[::3]
    tasks: list[Callable[[], Reply]] = [lambda name=name, n=n: create(name, n) for name in names for n in range(3, 6)]
    tasks += [lambda s=s, a=a: server.call("DELETE", f"/articles/{s}", token=tokens[a]) for s, a in doomed]
    for slug, _ in articles:
        for name in rng.sample(names, 4):
            method = rng.choice(["POST", "POST", "DELETE"])
            tasks.append(lambda s=slug, n=name, m=method: server.call(m, f"/articles/{s}/favorite", token=tokens[n]))
    tasks += [lambda f=f: server.call("POST", f"/profiles/{names[0]}/follow", token=tokens[f]) for f in names[1:]]
    rng.shuffle(tasks)

    replies = all_at_once(tasks, threads=24)

    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {200, 201, 204, 404}, (statuses, [r.body for r in replies if r.status >= 500][:3])
    assert server.scalar(COUNTER_DRIFT) == []
    # And what readers are told agrees with the rows.
    total = server.scalar("SELECT COUNT(*) FROM articles")
    assert server.call("GET", "/articles?limit=1").body["articlesCount"] == total
    shared = server.scalar("SELECT COUNT(*) FROM article_tags WHERE tag = 'shared'")
    assert server.call("GET", "/articles?tag=shared&limit=1").body["articlesCount"] == shared
    by_first = server.scalar(
        "SELECT COUNT(*) FROM articles a JOIN users u ON u.id = a.author_id WHERE u.username = :u", u=names[0]
    )
    assert server.call("GET", "/articles/feed?limit=1", token=tokens[names[1]]).body["articlesCount"] == by_first


def test_a_viewers_flags_and_feed_follow_each_acknowledged_write_while_others_read(server: Server) -> None:
    """Favorites racing cached list fills and follows racing cached feeds, on two workers: readers
    with the same token keep filling the pages and rebuilding the viewer's sets, and after each
    acknowledged write the writer's next reads (either worker) show it."""
    tokens = register_many(server, ["flagauthor", "flagreader"])
    author, reader = tokens["flagauthor"], tokens["flagreader"]
    slugs = [create_article(server, author, f"Flagged {n}") for n in range(3)]
    pages = ["/articles?author=flagauthor", "/articles/feed", f"/articles/{slugs[0]}", "/profiles/flagauthor"]
    stop = time.monotonic() + 120
    statuses: Counter[int] = Counter()
    done = False

    def read_forever() -> Reply:
        while not done and time.monotonic() < stop:
            for page in pages:
                statuses[server.call("GET", page, token=reader).status] += 1
        return Reply(200, None)

    wrong: list[str] = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        readers = [pool.submit(read_forever) for _ in range(5)]
        try:
            for step in range(16):
                on = step % 2 == 0
                method = "POST" if on else "DELETE"
                assert server.call(method, f"/articles/{slugs[0]}/favorite", token=reader).status == 200
                assert server.call(method, "/profiles/flagauthor/follow", token=reader).status == 200
                for _ in range(2):  # two reads: the two workers, one of them through a set it rebuilt
                    article = server.call("GET", f"/articles/{slugs[0]}", token=reader).body["article"]
                    listed = server.call("GET", "/articles?author=flagauthor", token=reader).body["articles"]
                    feed = server.call("GET", "/articles/feed", token=reader).body
                    profile = server.call("GET", "/profiles/flagauthor", token=reader).body["profile"]
                    first = next(a for a in listed if a["slug"] == slugs[0])
                    seen = (article["favorited"], first["favorited"], article["author"]["following"])
                    seen += (first["author"]["following"], profile["following"], feed["articlesCount"] == 3)
                    seen += (first["favoritesCount"] == 1, article["favoritesCount"] == 1)
                    if seen != (on,) * 8:
                        wrong.append(f"step {step}: expected {on}, saw {seen}")
        finally:
            done = True
            for future in readers:
                future.result(timeout=60)
    assert wrong == []
    assert set(statuses) == {200} and sum(statuses.values()) > 0, statuses
