"""articlesCount and the tag cloud read counters kept by triggers (migration 0005): after every kind
of write, each counter, each total the API answers and the tag cloud equal what COUNT(*) says."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Connection, text

from service.storage import migrate
from service.storage.db import get_db
from tests.conftest import Api, _reset, auth, forget_keys

# What the counters must hold, counted from the rows themselves.
TRUE_COUNTS = text(
    """
    SELECT 'all', COUNT(*) FROM articles
    UNION ALL SELECT 'author:' || author_id, COUNT(*) FROM articles GROUP BY author_id
    UNION ALL SELECT 'favorited:' || user_id, COUNT(*) FROM favorites GROUP BY user_id
    """
)
TRUE_TAG_COUNTS = text("SELECT tag, COUNT(*) FROM article_tags GROUP BY tag")
COUNTERS = text("SELECT scope, n FROM article_counts")
TAG_COUNTERS = text("SELECT tag, n FROM tag_counts")
TRUE_FEED = text(
    """
    SELECT COUNT(*) FROM articles a
    WHERE a.author_id IN (SELECT followee_id FROM follows WHERE follower_id = :viewer)
    """
)
TRUE_FILTERED = text(
    """
    SELECT COUNT(*) FROM articles a
    WHERE (:tag IS NULL OR a.id IN (SELECT article_id FROM article_tags WHERE tag = :tag))
      AND (:author IS NULL OR a.author_id IN (SELECT id FROM users WHERE username = :author))
      AND (:favorited IS NULL OR a.id IN (
            SELECT f.article_id FROM favorites f JOIN users u ON u.id = f.user_id WHERE u.username = :favorited))
    """
)
TRUE_CLOUD = text("SELECT tag FROM article_tags GROUP BY tag ORDER BY COUNT(*) DESC, tag LIMIT 100")
USERNAMES = text("SELECT username FROM users ORDER BY username")
TAGS = text("SELECT DISTINCT tag FROM article_tags ORDER BY tag")


def _nonzero(rows: Any) -> dict[str, int]:
    return {key: int(n) for key, n in rows if n}


def assert_counts_true(app: Flask, client: FlaskClient, tokens: dict[str, str]) -> None:
    """Counters equal COUNT(*), and so does every total the API answers, for every filter and feed."""
    with app.app_context(), get_db().read() as conn:
        assert _nonzero(conn.execute(COUNTERS)) == _nonzero(conn.execute(TRUE_COUNTS))
        assert _nonzero(conn.execute(TAG_COUNTERS)) == _nonzero(conn.execute(TRUE_TAG_COUNTS))
        users = [row[0] for row in conn.execute(USERNAMES)] + ["nobody"]
        tags = [row[0] for row in conn.execute(TAGS)] + ["unused"]
        cloud = [row[0] for row in conn.execute(TRUE_CLOUD)]
        queries: list[dict[str, Any]] = [{}]
        queries += [{"tag": t} for t in tags]
        queries += [{"author": u} for u in users] + [{"favorited": u} for u in users]
        some_tags = [t for t in tags if t in ("python", "flask")] or tags[:1]
        queries += [{"tag": t, "author": u} for t in some_tags for u in users]
        queries += [{"tag": t, "favorited": u} for t in some_tags for u in users]
        queries += [{"author": a, "favorited": u} for a in users for u in users]
        queries += [{"tag": some_tags[0], "author": a, "favorited": u} for a in users for u in users[:2]]
        expected = [_true_filtered(conn, q) for q in queries]
        feeds = {name: _true_feed(conn, name) for name in tokens}
    answered = []
    for query in queries:
        resp = client.get("/api/articles", query_string={**query, "limit": 1})
        assert resp.status_code == 200
        answered.append(resp.json["articlesCount"])  # type: ignore[index]
    assert answered == expected, [(q, a, e) for q, a, e in zip(queries, answered, expected, strict=True) if a != e]
    for name, token in tokens.items():
        resp = client.get("/api/articles/feed", query_string={"limit": 1}, headers=auth(token))
        if resp.status_code == 401:  # the account was deleted
            continue
        assert resp.json["articlesCount"] == feeds[name], name  # type: ignore[index]
    assert client.get("/api/tags").json == {"tags": cloud}


def _true_filtered(conn: Connection, query: dict[str, Any]) -> int:
    params = {"tag": None, "author": None, "favorited": None, **query}
    return int(conn.execute(TRUE_FILTERED, params).scalar_one())


def _true_feed(conn: Connection, username: str) -> int:
    viewer = conn.execute(text("SELECT id FROM users WHERE username = :u"), {"u": username}).scalar()
    return 0 if viewer is None else int(conn.execute(TRUE_FEED, {"viewer": viewer}).scalar_one())


def test_counts_equal_count_star_after_every_kind_of_write(app: Flask, client: FlaskClient, api: Api) -> None:
    tokens = {name: api.register(name) for name in ("ann", "bob", "cat")}

    def check(step: str, write: Callable[[], Any]) -> None:
        write()
        try:
            assert_counts_true(app, client, tokens)
        except AssertionError as err:
            raise AssertionError(f"after {step}: {err}") from err

    def call(method: str, path: str, token: str, status: int = 200) -> None:
        resp = client.open(f"/api{path}", method=method, headers=auth(token))
        assert resp.status_code == status, resp.get_data(as_text=True)

    check("nothing", lambda: None)
    one = api.create_article(tokens["ann"], "One", tags=["python", "flask"])
    check("a create with tags", lambda: None)
    two = api.create_article(tokens["ann"], "One", tags=["python"])  # same title: a suffixed slug
    check("a create with a taken title", lambda: None)
    three = api.create_article(tokens["bob"], "Three", tags=["flask", "sql", "python"])
    check("a create by another author", lambda: api.create_article(tokens["cat"], "Untagged"))
    check("a favorite", lambda: call("POST", f"/articles/{one['slug']}/favorite", tokens["bob"]))
    check("a repeated favorite", lambda: call("POST", f"/articles/{one['slug']}/favorite", tokens["bob"]))
    check("a second favorite", lambda: call("POST", f"/articles/{three['slug']}/favorite", tokens["bob"]))
    check("a favorite by the author", lambda: call("POST", f"/articles/{one['slug']}/favorite", tokens["ann"]))
    check("an unfavorite", lambda: call("DELETE", f"/articles/{three['slug']}/favorite", tokens["bob"]))
    check("a repeated unfavorite", lambda: call("DELETE", f"/articles/{three['slug']}/favorite", tokens["bob"]))
    check("a follow", lambda: call("POST", "/profiles/ann/follow", tokens["cat"]))
    check("a second follow", lambda: call("POST", "/profiles/bob/follow", tokens["cat"]))
    check("an unfollow", lambda: call("DELETE", "/profiles/ann/follow", tokens["cat"]))
    check(
        "an update",
        lambda: client.put(
            f"/api/articles/{two['slug']}", json={"article": {"title": "Two"}}, headers=auth(tokens["ann"])
        ),
    )
    check(
        "a comment",
        lambda: client.post(
            f"/api/articles/{one['slug']}/comments", json={"comment": {"body": "hi"}}, headers=auth(tokens["cat"])
        ),
    )
    # Its tags, its favorites (by the author and by bob) and its comment go with it.
    check(
        "a delete of a tagged, favorited article",
        lambda: call("DELETE", f"/articles/{one['slug']}", tokens["ann"], 204),
    )
    check("a favorite again", lambda: call("POST", f"/articles/{three['slug']}/favorite", tokens["ann"]))
    # No API deletes accounts; the database cascades to their articles, tags, favorites and follows.
    check("an account deletion", lambda: _delete_user(app, "bob"))
    check(
        "a delete of the last article by an author",
        lambda: call("DELETE", f"/articles/{two['slug']}", tokens["ann"], 204),
    )


def _delete_user(app: Flask, username: str) -> None:
    with app.app_context(), get_db().transaction() as conn:
        conn.execute(text("DELETE FROM users WHERE username = :u"), {"u": username})
    # SQL typed by hand moves no cache generation: forget what the cache holds.
    if app.config["CACHE_TYPE"] == "RedisCache":
        forget_keys(app.config["REDIS_URL"], app.config["CACHE_KEY_PREFIX"])
    else:
        app.extensions["shared_cache"].backend.clear()


def test_a_create_whose_slug_is_taken_counts_once(app: Flask, client: FlaskClient, api: Api) -> None:
    token = api.register("ann")
    for _ in range(3):
        api.create_article(token, "Same", tags=["t"])
    assert client.get("/api/articles").json["articlesCount"] == 3  # type: ignore[index]
    assert client.get("/api/articles", query_string={"tag": "t"}).json["articlesCount"] == 3  # type: ignore[index]
    assert_counts_true(app, client, {"ann": token})


def test_a_migrated_database_counts_the_rows_it_already_had(app: Flask) -> None:
    """Migration 0005's backfill: counters rebuilt from the rows equal what the triggers kept."""
    client = app.test_client()
    api = Api(client)
    tokens = {name: api.register(name) for name in ("ann", "bob")}
    article = api.create_article(tokens["ann"], "A", tags=["x", "y"])
    api.create_article(tokens["bob"], "B", tags=["y"])
    client.post(f"/api/articles/{article['slug']}/favorite", headers=auth(tokens["bob"]))
    backfill = _backfill_statements(_dialect(app))
    with app.app_context(), get_db().transaction() as conn:
        kept = (_nonzero(conn.execute(COUNTERS)), _nonzero(conn.execute(TAG_COUNTERS)))
        conn.execute(text("DELETE FROM article_counts"))
        conn.execute(text("DELETE FROM tag_counts"))
        for statement in backfill:
            conn.exec_driver_sql(statement)
        rebuilt = (_nonzero(conn.execute(COUNTERS)), _nonzero(conn.execute(TAG_COUNTERS)))
    assert rebuilt == kept
    assert kept[0] == {"all": 2, "author:1": 1, "author:2": 1, "favorited:2": 1}
    assert kept[1] == {"x": 1, "y": 2}
    assert_counts_true(app, client, tokens)


def _dialect(app: Flask) -> str:
    with app.app_context():
        return get_db().dialect


def _backfill_statements(dialect: str) -> list[str]:
    """The backfill (INSERT ... SELECT) statements of migration 0005 for `dialect`: one a line, at its end."""
    (migration,) = [m for m in migrate.available(dialect) if m.version == "0005_maintained_counts"]
    lines = migration.path.read_text().splitlines()
    found = [line for line in lines if line.startswith("INSERT INTO") and " SELECT " in line]
    assert len(found) == 4, found
    return found


def test_a_create_still_in_its_transaction_does_not_hold_the_counters_against_others(pg_app: Flask) -> None:
    """Every create counts into 'all': the counter row must be locked only while a create commits, not
    for the rest of its transaction, or concurrent creates queue behind each other (PostgreSQL)."""
    _reset(pg_app)
    api = Api(pg_app.test_client())
    api.register("ann")
    engine = pg_app.extensions["db"].engine
    insert = text(
        "INSERT INTO articles (slug, author_id, title, description, body, created_at, updated_at) "
        "SELECT :slug, id, 't', 'd', 'b', now(), now() FROM users WHERE username = 'ann'"
    )
    with engine.connect() as first, engine.connect() as second:
        first.execute(insert, {"slug": "first-open"})  # left open: the transaction goes on
        second.execute(text("SET LOCAL lock_timeout = '1s'"))
        second.execute(insert, {"slug": "second"})  # waits on the counter row when it is held
        second.commit()
        first.commit()
    with engine.connect() as conn:
        counts = dict(conn.execute(text("SELECT scope, n FROM article_counts WHERE scope = 'all'")).all())
    assert counts == {"all": 2}
