"""Idempotency-Key on the three creates: a retry replays the first answer and never creates twice.

Runs on SQLite and PostgreSQL through the `app` fixture (including a duplicate that must wait for
a first transaction still holding the key), and on PostgreSQL through a real gunicorn with two
workers for twenty simultaneous identical requests. Every test checks the rows, not just replies.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.api import timefmt
from service.articles.cache_keys import NEW_ARTICLES
from service.articles.schemas import NewArticle, NewArticleRequest
from service.caching import cache
from service.security import idempotency
from service.storage.db import get_db
from service.tags.cache_keys import TAGS
from tests.conftest import Api, auth, scratch_database
from tests.integration.helpers import error_messages
from tests.live import live_server

ARTICLE = {"article": {"title": "Once only", "description": "d", "body": "b", "tagList": ["x"]}}
NEW_USER = {"user": {"username": "keyed", "email": "keyed@example.com", "password": "password123"}}


def keyed(key: str, token: str | None = None) -> dict[str, str]:
    headers = {idempotency.HEADER: key}
    return {**headers, **auth(token)} if token else headers


def count(app: Flask, table: str) -> int:
    with app.app_context(), get_db().read() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one())


def at(app: Flask, moment: datetime) -> Any:
    """`moment` as the dialect stores timestamps."""
    with app.app_context():
        return moment if get_db().dialect == "postgresql" else timefmt.iso(moment)


def generations(app: Flask) -> list[int]:
    with app.app_context():
        gens = cache.get_cache().generations([NEW_ARTICLES, TAGS])
    assert gens is not None
    return gens


def test_a_replayed_article_create_returns_the_first_answer_and_creates_one_row(app: Flask, api: Api) -> None:
    token = api.register("author")
    before = generations(app)

    first = api.client.post("/api/articles", json=ARTICLE, headers=keyed("k-1", token))
    assert first.status_code == 201, first.get_data(as_text=True)
    assert idempotency.REPLAYED_HEADER not in first.headers
    after_first = generations(app)
    assert after_first[0] > before[0] and after_first[1] > before[1]

    # Key order and spacing differ; the canonical body is the same request.
    same = '{ "article": {"tagList": ["x"], "body": "b", "description": "d", "title": "Once only"} }'
    replay = api.client.post("/api/articles", data=same, content_type="application/json", headers=keyed("k-1", token))

    assert replay.status_code == 201
    assert replay.headers[idempotency.REPLAYED_HEADER] == "true"
    assert replay.get_data() == first.get_data()
    assert replay.headers["Cache-Control"] == "no-store"
    assert count(app, "articles") == 1
    assert count(app, "article_tags") == 1
    assert count(app, "idempotency_keys") == 1
    assert generations(app) == after_first  # a replay invalidates nothing


def test_a_replayed_comment_returns_the_first_answer_and_creates_one_row(app: Flask, api: Api) -> None:
    token = api.register("talker")
    slug = api.create_article(token)["slug"]
    comment = {"comment": {"body": "first!"}}

    first = api.client.post(f"/api/articles/{slug}/comments", json=comment, headers=keyed("c-1", token))
    replay = api.client.post(f"/api/articles/{slug}/comments", json=comment, headers=keyed("c-1", token))

    assert first.status_code == 200, first.get_data(as_text=True)
    assert replay.status_code == 200
    assert replay.headers[idempotency.REPLAYED_HEADER] == "true"
    assert replay.get_data() == first.get_data()
    assert count(app, "comments") == 1


def test_a_replayed_registration_creates_one_account_and_gives_a_working_token(app: Flask, client: FlaskClient) -> None:
    first = client.post("/api/users", json=NEW_USER, headers=keyed("r-1"))
    replay = client.post("/api/users", json=NEW_USER, headers=keyed("r-1"))

    assert first.status_code == 201, first.get_data(as_text=True)
    assert replay.status_code == 201, replay.get_data(as_text=True)
    assert replay.headers[idempotency.REPLAYED_HEADER] == "true"
    first_user, replayed_user = first.json["user"], replay.json["user"]  # type: ignore[index]
    # The stored copy holds no token: the replay gets the same account with a fresh one.
    assert {**replayed_user, "token": None} == {**first_user, "token": None}
    me = client.get("/api/user", headers=auth(replayed_user["token"]))
    assert me.status_code == 200 and me.json["user"]["username"] == "keyed"  # type: ignore[index]
    assert count(app, "users") == 1
    with app.app_context(), get_db().read() as conn:
        stored = conn.execute(text("SELECT body FROM idempotency_keys")).scalar_one()
    assert json.loads(bytes(stored))["user"]["token"] == ""


def test_a_registration_replay_stops_working_once_the_password_changed(client: FlaskClient) -> None:
    first = client.post("/api/users", json=NEW_USER, headers=keyed("r-2"))
    token = first.json["user"]["token"]  # type: ignore[index]
    assert client.put("/api/user", json={"user": {"password": "another-pass"}}, headers=auth(token)).status_code == 200

    replay = client.post("/api/users", json=NEW_USER, headers=keyed("r-2"))

    assert error_messages(replay, 422) == [idempotency.messages.ACCOUNT_CHANGED]


def test_a_users_same_key_for_a_different_request_is_422_and_writes_nothing(app: Flask, api: Api) -> None:
    token = api.register("mixer")
    first = api.client.post("/api/articles", json=ARTICLE, headers=keyed("shared", token))
    assert first.status_code == 201
    other = {"article": {**ARTICLE["article"], "body": "a different body"}}

    changed_body = api.client.post("/api/articles", json=other, headers=keyed("shared", token))
    slug = first.json["article"]["slug"]  # type: ignore[index]
    changed_path = api.client.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": "hi"}}, headers=keyed("shared", token)
    )

    assert error_messages(changed_body, 422) == [idempotency.messages.KEY_REUSED]
    assert error_messages(changed_path, 422) == [idempotency.messages.KEY_REUSED]
    assert count(app, "articles") == 1
    assert count(app, "comments") == 0
    assert count(app, "idempotency_keys") == 1


def test_different_users_may_use_the_same_key_independently(app: Flask, api: Api) -> None:
    alice, bob = api.register("alice"), api.register("bob")

    replies = [api.client.post("/api/articles", json=ARTICLE, headers=keyed("same-key", t)) for t in (alice, bob)]

    assert [r.status_code for r in replies] == [201, 201]
    assert all(idempotency.REPLAYED_HEADER not in r.headers for r in replies)
    assert [r.json["article"]["author"]["username"] for r in replies] == ["alice", "bob"]  # type: ignore[index]
    assert count(app, "articles") == 2


def test_two_anonymous_clients_with_one_key_register_separately_and_each_retry_replays(app: Flask) -> None:
    """Registration has no signed-in user: its key is scoped to the request body, not to one shared scope."""
    ann, ben = app.test_client(), app.test_client()
    ann_user = {"user": {"username": "ann", "email": "ann@example.com", "password": "password123"}}
    ben_user = {"user": {"username": "ben", "email": "ben@example.com", "password": "password456"}}

    firsts = [c.post("/api/users", json=body, headers=keyed("1")) for c, body in ((ann, ann_user), (ben, ben_user))]
    retries = [c.post("/api/users", json=body, headers=keyed("1")) for c, body in ((ann, ann_user), (ben, ben_user))]

    for resp in firsts:
        assert resp.status_code == 201, resp.get_data(as_text=True)
        assert idempotency.REPLAYED_HEADER not in resp.headers
    for resp, username in zip(retries, ["ann", "ben"], strict=True):
        assert resp.status_code == 201, resp.get_data(as_text=True)
        assert resp.headers[idempotency.REPLAYED_HEADER] == "true"
        assert resp.json["user"]["username"] == username  # type: ignore[index]
    assert count(app, "users") == 2
    assert count(app, "idempotency_keys") == 2


@pytest.mark.parametrize("bad", ["", "has space", "x" * 256, "caf\u00e9", "tab\there"])
def test_a_malformed_key_is_422_and_writes_nothing(app: Flask, api: Api, bad: str) -> None:
    token = api.register("picky")

    resp = api.client.post("/api/articles", json=ARTICLE, headers=keyed(bad, token))

    assert error_messages(resp, 422) == [idempotency.messages.INVALID_KEY]
    assert count(app, "articles") == 0
    assert count(app, "idempotency_keys") == 0


def test_the_longest_key_and_every_visible_character_are_accepted(app: Flask, api: Api) -> None:
    token = api.register("wide")
    visible = "".join(chr(c) for c in range(0x21, 0x7F))

    for key in ("x" * 255, visible, '"quoted-structured-field"'):
        resp = api.client.post("/api/articles", json=ARTICLE, headers=keyed(key, token))
        assert resp.status_code == 201, (key, resp.get_data(as_text=True))
    assert count(app, "idempotency_keys") == 3


def test_a_key_whose_first_attempt_failed_can_be_retried(app: Flask, api: Api) -> None:
    token = api.register("retrier")
    api.register("taken")

    # Refused before the transaction (validation) and inside it (unknown article, taken username).
    invalid = api.client.post("/api/articles", json={"article": {"title": ""}}, headers=keyed("a", token))
    missing = api.client.post(
        "/api/articles/later/comments", json={"comment": {"body": "hi"}}, headers=keyed("b", token)
    )
    taken_user = {"user": {"username": "taken", "email": "new@example.com", "password": "password123"}}
    taken = api.client.post("/api/users", json=taken_user, headers=keyed("c"))
    assert invalid.status_code == 422
    assert missing.status_code == 404
    assert error_messages(taken, 422) == ["username has already been taken"]
    assert count(app, "idempotency_keys") == 0

    later = {"article": {**ARTICLE["article"], "title": "Later"}}
    article = api.client.post("/api/articles", json=later, headers=keyed("a", token))
    assert article.json["article"]["slug"] == "later"  # type: ignore[index]
    comment = api.client.post(
        "/api/articles/later/comments", json={"comment": {"body": "hi"}}, headers=keyed("b", token)
    )
    free_user = {"user": {**taken_user["user"], "username": "free"}}
    registered = api.client.post("/api/users", json=free_user, headers=keyed("c"))

    for resp in (article, comment, registered):
        assert resp.status_code in (200, 201), resp.get_data(as_text=True)
        assert idempotency.REPLAYED_HEADER not in resp.headers
    assert count(app, "comments") == 1
    assert count(app, "idempotency_keys") == 3


def test_an_expired_key_is_free_again(app: Flask, api: Api) -> None:
    token = api.register("forgetful")
    first = api.client.post("/api/articles", json=ARTICLE, headers=keyed("old", token))
    ttl = app.config["IDEMPOTENCY_TTL_SECONDS"]
    with app.app_context(), get_db().transaction() as conn:
        aged = at(app, datetime.now(UTC) - timedelta(seconds=ttl + 5))
        conn.execute(text("UPDATE idempotency_keys SET created_at = :aged"), {"aged": aged})

    again = api.client.post("/api/articles", json=ARTICLE, headers=keyed("old", token))
    replay = api.client.post("/api/articles", json=ARTICLE, headers=keyed("old", token))

    assert first.status_code == again.status_code == replay.status_code == 201
    assert idempotency.REPLAYED_HEADER not in again.headers
    assert again.json["article"]["slug"] != first.json["article"]["slug"]  # type: ignore[index]
    assert replay.headers[idempotency.REPLAYED_HEADER] == "true"
    assert replay.get_data() == again.get_data()
    assert count(app, "articles") == 2
    assert count(app, "idempotency_keys") == 1


def test_expired_keys_are_purged_in_bounded_batches_by_keyed_writes(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = api.register("janitor")
    ttl = app.config["IDEMPOTENCY_TTL_SECONDS"]
    now = datetime.now(UTC)
    rows = [(f"old-{i}", now - timedelta(seconds=ttl + 60 + i)) for i in range(3)]
    rows.append(("young", now - timedelta(seconds=ttl - 600)))
    with app.app_context(), get_db().transaction() as conn:
        for key, created in rows:
            conn.execute(
                text(
                    "INSERT INTO idempotency_keys (scope, key, fingerprint, status, body, created_at)"
                    " VALUES ('user:999', :key, 'f', 201, :body, :created)"
                ),
                {"key": key, "body": b"{}", "created": at(app, created)},
            )
    monkeypatch.setattr(idempotency, "PURGE_EVERY", 1)  # every recorded key purges
    monkeypatch.setattr(idempotency, "PURGE_BATCH", 2)

    def keys() -> set[str]:
        with app.app_context(), get_db().read() as conn:
            return set(conn.execute(text("SELECT key FROM idempotency_keys")).scalars())

    assert api.client.post("/api/articles", json=ARTICLE, headers=keyed("p-1", token)).status_code == 201
    assert keys() == {"old-0", "young", "p-1"}  # the two oldest went first
    assert api.client.post("/api/articles", json=ARTICLE, headers=keyed("p-2", token)).status_code == 201
    assert keys() == {"young", "p-1", "p-2"}


def wait_for_pg_lock_waiter(app: Flask, deadline: float) -> None:
    with app.app_context(), get_db().read() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text(
                    "SELECT COUNT(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the duplicate request never waited on the key's lock")


@pytest.mark.parametrize("first_commits", [True, False], ids=["first-commits", "first-rolls-back"])
def test_a_concurrent_duplicate_waits_for_the_first_and_then_follows_its_outcome(
    app: Flask, api: Api, first_commits: bool
) -> None:
    token = api.register("racer")
    with app.app_context(), get_db().read() as conn:
        user_id = conn.execute(text("SELECT id FROM users WHERE username = 'racer'")).scalar_one()
    with app.test_request_context():
        fingerprint = idempotency.fingerprint(
            "POST",
            "/api/articles",
            NewArticleRequest(NewArticle(title="Once only", description="d", body="b", tagList=["x"])),
        )
    key = idempotency.Key(f"user:{user_id}", "held", fingerprint, 201)
    result: dict[str, Any] = {}

    def duplicate() -> None:
        result["resp"] = api.client.post("/api/articles", json=ARTICLE, headers=keyed("held", token))

    worker = threading.Thread(target=duplicate, daemon=True)
    with app.app_context():

        class Abandon(Exception):
            pass

        try:
            with get_db().transaction() as conn:
                assert idempotency.claim(conn, key) is None
                worker.start()
                if get_db().dialect == "postgresql":
                    wait_for_pg_lock_waiter(app, time.monotonic() + 10)
                else:
                    time.sleep(0.5)  # SQLite: the duplicate's BEGIN IMMEDIATE is waiting on busy_timeout
                assert worker.is_alive(), "the duplicate did not wait for the transaction holding its key"
                if not first_commits:
                    raise Abandon
                idempotency.record(conn, key, b'{"article": "the first answer"}')
        except Abandon:
            pass
    worker.join(timeout=15)
    assert not worker.is_alive()

    resp = result["resp"]
    assert resp.status_code == 201, resp.get_data(as_text=True)
    if first_commits:
        assert resp.headers[idempotency.REPLAYED_HEADER] == "true"
        assert resp.get_data() == b'{"article": "the first answer"}'
        assert count(app, "articles") == 0
    else:
        assert idempotency.REPLAYED_HEADER not in resp.headers
        assert resp.json["article"]["title"] == "Once only"  # type: ignore[index]
        assert count(app, "articles") == 1
    assert count(app, "idempotency_keys") == 1


def test_the_openapi_document_publishes_the_header_on_the_three_creates(client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").get_json()
    operations = [("/api/users", "post"), ("/api/articles", "post"), ("/api/articles/{slug}/comments", "post")]

    for path, method in operations:
        operation = doc["paths"][path][method]
        (param,) = [p for p in operation["parameters"] if p["in"] == "header" and p["name"] == "Idempotency-Key"]
        assert param["name"] == "Idempotency-Key" and param["required"] is False
        assert param["schema"] == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]{1,255}$"}
        assert "422" in param["description"]
        assert "422" in operation["responses"]
    keyed_operations = {
        (path, method)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if any(p["in"] == "header" and p["name"] == "Idempotency-Key" for p in operation.get("parameters", []))
    }
    assert keyed_operations == set(operations)


@pytest.mark.postgres
def test_twenty_simultaneous_keyed_creates_through_gunicorn_make_one_article() -> None:
    with scratch_database("conduit_idem") as url:
        prefix = f"test:{make_url(url).database}:"
        # The 19 duplicates hold write connections while they wait for the first; on a loaded machine
        # a worker's pool may briefly run dry, which is not what this test is about.
        with live_server(url, workers=2, CACHE_KEY_PREFIX=prefix, DB_POOL_TIMEOUT="10") as base:

            def call(path: str, payload: Any, headers: dict[str, str]) -> tuple[int, bytes, str | None]:
                request = urllib.request.Request(
                    base + path, data=json.dumps(payload).encode(), method="POST", headers=headers
                )
                request.add_header("Content-Type", "application/json")
                try:
                    with urllib.request.urlopen(request, timeout=30) as resp:
                        return resp.status, resp.read(), resp.headers.get(idempotency.REPLAYED_HEADER)
                except urllib.error.HTTPError as err:
                    return err.code, err.read(), err.headers.get(idempotency.REPLAYED_HEADER)

            status, body, _ = call("/api/users", NEW_USER, {})
            assert status == 201, body
            token = json.loads(body)["user"]["token"]
            barrier = Barrier(20)

            def create(_: int) -> tuple[int, bytes, str | None]:
                barrier.wait(timeout=30)
                return call("/api/articles", ARTICLE, keyed("burst-1", token))

            with ThreadPoolExecutor(max_workers=20) as pool:
                replies = list(pool.map(create, range(20)))

            assert Counter(status for status, _, _ in replies) == {201: 20}, replies
            assert len({body for _, body, _ in replies}) == 1
            assert Counter(replayed for _, _, replayed in replies) == {None: 1, "true": 19}
            engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
            try:
                with engine.connect() as conn:
                    assert conn.execute(text("SELECT COUNT(*) FROM articles")).scalar_one() == 1
                    assert conn.execute(text("SELECT COUNT(*) FROM article_tags")).scalar_one() == 1
                    assert conn.execute(text("SELECT COUNT(*) FROM idempotency_keys")).scalar_one() == 1
            finally:
                engine.dispose()
