"""Comments and favorites racing the delete of their article, on a real gunicorn + PostgreSQL.

Whatever the interleaving, a client hears 200 (it got in before the delete, and the delete took its
row away with the article) or 404 "article not found": never 401, which would sign it out, and never
500. The database keeps no row that points at the deleted article.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from service.api.errors import messages
from tests.conftest import scratch_database
from tests.integration.test_concurrency import Reply, Server, all_at_once, create_article, register_many
from tests.live import live_server

pytestmark = pytest.mark.postgres

ARTICLE_GONE = {"errors": {"body": [messages.ARTICLE_NOT_FOUND]}}
ORPHANS = """
    SELECT (SELECT COUNT(*) FROM comments c WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = c.article_id))
         + (SELECT COUNT(*) FROM favorites f WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = f.article_id))
         + (SELECT COUNT(*) FROM article_tags t WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = t.article_id))
"""


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with scratch_database("conduit_fk_race") as url:
        prefix = f"test:{make_url(url).database}:"
        # Writers parked on a row lock each hold a pooled connection: room for all of them in one worker.
        with live_server(url, workers=2, CACHE_KEY_PREFIX=prefix, DB_WRITE_POOL_SIZE="20") as base:
            engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
            try:
                yield Server(base, engine)
            finally:
                engine.dispose()


def writes_on(server: Server, slug: str, tokens: list[str]) -> list[Callable[[], Reply]]:
    """A comment and a favorite on `slug` by each of `tokens`."""
    comment = {"comment": {"body": "me first"}}
    return [
        task
        for token in tokens
        for task in (
            lambda t=token: server.call("POST", f"/articles/{slug}/comments", comment, t),
            lambda t=token: server.call("POST", f"/articles/{slug}/favorite", token=t),
        )
    ]


def assert_each_write_landed_or_found_no_article(replies: list[Reply]) -> None:
    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {200, 404}, statuses
    assert all(r.body == ARTICLE_GONE for r in replies if r.status == 404)


def assert_nothing_left_of(server: Server, slugs: list[str]) -> None:
    assert server.scalar("SELECT COUNT(*) FROM articles WHERE slug IN :slugs", slugs=tuple(slugs)) == 0
    assert server.scalar(ORPHANS) == 0
    for slug in slugs:
        assert server.call("GET", f"/articles/{slug}").status == 404


def lock_waiters(engine: Engine) -> int:
    query = text(
        "SELECT COUNT(*) FROM pg_stat_activity"
        " WHERE application_name = 'conduit' AND wait_event_type = 'Lock' AND datname = current_database()"
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def wait_for_lock_waiters(engine: Engine, n: int, seconds: float = 4) -> None:
    deadline = time.monotonic() + seconds
    while lock_waiters(engine) < n:
        if time.monotonic() > deadline:
            raise AssertionError(f"only {lock_waiters(engine)} of {n} requests waited on the article's row lock")
        time.sleep(0.02)


def test_writes_that_found_the_article_but_insert_after_its_delete_are_404_not_401(server: Server) -> None:
    """Every write has looked the article up and waits to insert when the delete commits."""
    tokens = register_many(server, ["owner"] + [f"early{i}" for i in range(6)])
    owner = tokens.pop("owner")
    slug = create_article(server, owner, "Going, going")
    writes = writes_on(server, slug, list(tokens.values()))

    with ThreadPoolExecutor(max_workers=len(writes) + 1) as pool, server.engine.connect() as locker:
        with locker.begin():
            # Holding the article's row lock parks the delete, then every insert's foreign-key check,
            # behind it; the delete is first in line, so each insert then finds the article deleted.
            locker.execute(text("SELECT id FROM articles WHERE slug = :slug FOR UPDATE"), {"slug": slug})
            deleting = pool.submit(server.call, "DELETE", f"/articles/{slug}", None, owner)
            wait_for_lock_waiters(server.engine, 1)
            pending = [pool.submit(write) for write in writes]
            wait_for_lock_waiters(server.engine, 1 + len(writes))
        replies = [p.result(timeout=30) for p in pending]
        deleted = deleting.result(timeout=30)

    assert deleted.status == 204, deleted.body
    assert_each_write_landed_or_found_no_article(replies)
    assert Counter(r.status for r in replies) == {404: len(writes)}
    assert_nothing_left_of(server, [slug])


def test_many_clients_commenting_and_favoriting_while_the_author_deletes_hear_200_or_404(server: Server) -> None:
    tokens = register_many(server, ["writer"] + [f"fan{i}" for i in range(12)])
    writer = tokens.pop("writer")
    rng = random.Random(9)
    slugs = [create_article(server, writer, f"Brief {n}") for n in range(4)]
    tasks: list[Callable[[], Reply]] = []
    deletes: list[int] = []
    for slug in slugs:
        writes = writes_on(server, slug, list(tokens.values()))
        rng.shuffle(writes)
        at = rng.randrange(len(writes) // 4, len(writes) // 2)
        deletes.append(len(tasks) + at)
        tasks += [*writes[:at], partial(server.call, "DELETE", f"/articles/{slug}", None, writer), *writes[at:]]

    replies = all_at_once(tasks, threads=24)

    assert [replies[i].status for i in deletes] == [204] * len(slugs)
    writes_replies = [r for i, r in enumerate(replies) if i not in deletes]
    assert_each_write_landed_or_found_no_article(writes_replies)
    assert_nothing_left_of(server, slugs)


def test_unfavorites_racing_the_delete_of_their_article_hear_200_or_404_never_503(server: Server) -> None:
    """An unfavorite deleted its favorite row, then waited for the article's row to update the count,
    while the article's delete held that row and waited for the favorite row: a deadlock, answered
    503. Both now take the article's row first."""
    tokens = register_many(server, ["unloved"] + [f"fickle{i}" for i in range(16)])
    writer = tokens.pop("unloved")
    rng = random.Random(3)
    replies: list[Reply] = []
    slugs = []
    for n in range(4):
        slug = create_article(server, writer, f"Fickle {n}")
        for token in tokens.values():
            assert server.call("POST", f"/articles/{slug}/favorite", token=token).status == 200
        tasks = [partial(server.call, "DELETE", f"/articles/{slug}/favorite", None, t) for t in tokens.values()]
        tasks.insert(rng.randrange(len(tasks)), partial(server.call, "DELETE", f"/articles/{slug}", None, writer))
        replies += all_at_once(tasks, threads=len(tasks))
        slugs.append(slug)

    statuses = Counter(r.status for r in replies)
    assert set(statuses) <= {200, 204, 404}, statuses
    assert statuses[204] == len(slugs)
    assert all(r.body == ARTICLE_GONE for r in replies if r.status == 404)
    assert_nothing_left_of(server, slugs)
