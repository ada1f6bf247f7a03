"""A write that races the delete of a row it references answers for the row that vanished.

Each test makes the race certain: right after the service has looked up what it is about to
reference, the row is deleted, so the insert that follows fails its foreign key. A vanished
article or profile is 404; only the token's own account vanishing is 401 (clients log out on 401).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Connection, text

from service.api.errors import messages
from service.articles import repository as articles_repo
from service.comments import repository as comments_repo
from service.profiles import repository as profiles_repo
from service.security import idempotency
from service.storage import foreign_keys
from service.storage.db import get_db
from tests.conftest import Api, auth, build_app
from tests.integration.helpers import error_messages

DELETE_ARTICLE = "DELETE FROM articles WHERE slug = :key"
DELETE_USER = "DELETE FROM users WHERE username = :key"


def delete_row(conn: Connection, sql: str, key: str) -> None:
    """Delete as a concurrent request would, while `conn`'s transaction goes on.

    PostgreSQL: from another connection, committed. SQLite: a write transaction holds the
    database's only write lock (BEGIN IMMEDIATE) until it ends, so no other connection can
    delete in between; the delete runs in the same transaction, which is what the insert sees.
    """
    if conn.dialect.name == "postgresql":
        with conn.engine.connect() as other, other.begin():
            other.execute(text(sql), {"key": key})
    else:
        conn.execute(text(sql), {"key": key})


def vanish_after(monkeypatch: pytest.MonkeyPatch, module: ModuleType, name: str, sql: str, key: str) -> None:
    """Once `module.name(conn, ...)` has returned, delete the row `sql` names by `key`."""
    original = getattr(module, name)
    fired = False

    def hooked(conn: Connection, *args: Any, **kwargs: Any) -> Any:
        nonlocal fired
        result = original(conn, *args, **kwargs)
        if not fired:
            fired = True
            delete_row(conn, sql, key)
        return result

    monkeypatch.setattr(module, name, hooked)


def count(app: Flask, sql: str) -> int:
    with app.app_context(), get_db().read() as conn:
        return int(conn.execute(text(sql)).scalar_one())


@pytest.fixture
def slug(api: Api) -> str:
    return str(api.create_article(api.register("author"), "Short lived", tags=["t"])["slug"])


def comment(api: Api, slug: str, token: str) -> Any:
    return api.client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "late"}}, headers=auth(token))


def favorite(api: Api, slug: str, token: str) -> Any:
    return api.client.post(f"/api/articles/{slug}/favorite", headers=auth(token))


# --- the article vanished: 404, the client stays signed in ------------------------------------------


def test_a_comment_on_an_article_deleted_after_its_lookup_is_404_article_not_found(
    app: Flask, api: Api, slug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = api.register("reader")
    vanish_after(monkeypatch, comments_repo, "target", DELETE_ARTICLE, slug)

    assert error_messages(comment(api, slug, reader), 404) == [messages.ARTICLE_NOT_FOUND]
    assert count(app, "SELECT COUNT(*) FROM comments") == 0
    # Still signed in: the same token keeps working.
    assert api.client.get("/api/user", headers=auth(reader)).status_code == 200


def test_a_favorite_of_an_article_deleted_after_its_lookup_is_404_article_not_found(
    app: Flask, api: Api, slug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = api.register("reader")
    vanish_after(monkeypatch, articles_repo, "article_by_slug", DELETE_ARTICLE, slug)

    assert error_messages(favorite(api, slug, reader), 404) == [messages.ARTICLE_NOT_FOUND]
    assert count(app, "SELECT COUNT(*) FROM favorites") == 0
    assert api.client.get("/api/user", headers=auth(reader)).status_code == 200


def test_following_a_profile_deleted_after_its_lookup_is_404_profile_not_found(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = api.register("reader")
    api.register("leaving")
    vanish_after(monkeypatch, profiles_repo, "profile", DELETE_USER, "leaving")

    resp = api.client.post("/api/profiles/leaving/follow", headers=auth(reader))

    assert error_messages(resp, 404) == [messages.PROFILE_NOT_FOUND]
    assert count(app, "SELECT COUNT(*) FROM follows") == 0


# --- the token's own account vanished: 401, as before ----------------------------------------------


def test_a_comment_by_an_account_deleted_after_the_article_lookup_is_401_account_gone(
    app: Flask, api: Api, slug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = api.register("reader")
    vanish_after(monkeypatch, comments_repo, "target", DELETE_USER, "reader")

    assert error_messages(comment(api, slug, reader), 401) == [messages.ACCOUNT_GONE]
    assert count(app, "SELECT COUNT(*) FROM comments") == 0
    assert count(app, "SELECT COUNT(*) FROM articles") == 1


def test_a_favorite_by_an_account_deleted_after_the_article_lookup_is_401_account_gone(
    app: Flask, api: Api, slug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = api.register("reader")
    vanish_after(monkeypatch, articles_repo, "article_by_slug", DELETE_USER, "reader")

    assert error_messages(favorite(api, slug, reader), 401) == [messages.ACCOUNT_GONE]
    assert count(app, "SELECT COUNT(*) FROM favorites") == 0
    assert count(app, "SELECT favorites_count FROM articles") == 0


def test_a_follow_by_an_account_deleted_after_the_profile_lookup_is_401_account_gone(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = api.register("reader")
    api.register("idol")
    vanish_after(monkeypatch, profiles_repo, "profile", DELETE_USER, "reader")

    resp = api.client.post("/api/profiles/idol/follow", headers=auth(reader))

    assert error_messages(resp, 401) == [messages.ACCOUNT_GONE]
    assert count(app, "SELECT COUNT(*) FROM follows") == 0


def test_an_article_with_tags_by_an_account_deleted_mid_request_is_401_account_gone(
    app: Flask, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = api.register("writer")
    # claim() is the first statement of the create's transaction: the account goes right after it.
    vanish_after(monkeypatch, idempotency, "claim", DELETE_USER, "writer")

    article = {"title": "Orphan", "description": "d", "body": "b", "tagList": ["a", "b"]}
    resp = api.client.post("/api/articles", json={"article": article}, headers=auth(writer))

    assert error_messages(resp, 401) == [messages.ACCOUNT_GONE]
    assert count(app, "SELECT COUNT(*) FROM articles") == 0
    assert count(app, "SELECT COUNT(*) FROM article_tags") == 0


# --- every foreign key is accounted for --------------------------------------------------------------


def test_every_foreign_key_of_the_schema_says_what_its_absence_answers(app: Flask) -> None:
    with app.app_context(), get_db().read() as conn:
        if conn.dialect.name == "postgresql":
            query = "SELECT conname FROM pg_constraint WHERE contype = 'f' AND connamespace = 'public'::regnamespace"
            names = set(conn.execute(text(query)).scalars())
        else:
            # SQLite keeps no names: the same <table>_<column>_fkey, from each table's foreign-key list.
            tables = conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars().all()
            names = {
                f"{table}_{fk._mapping['from']}_fkey"
                for table in tables
                for fk in conn.execute(text("SELECT * FROM pragma_foreign_key_list(:t)"), {"t": table})
            }
    assert names == set(foreign_keys.CONSTRAINTS)


def test_a_foreign_key_failure_no_service_placed_is_a_conflict_to_retry_not_401(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path}/fk.db")

    def unplaced() -> str:
        with get_db().transaction() as conn:
            conn.execute(text("INSERT INTO article_tags (article_id, tag) VALUES (42, 'x')"))
        return "unreachable"

    app.add_url_rule("/api/unplaced", "unplaced", unplaced, methods=["POST"])
    assert error_messages(app.test_client().post("/api/unplaced"), 422) == [messages.CONFLICT]
