"""Comments on articles, through the HTTP API."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import text as sql

from service.api.errors import messages
from service.storage.db import get_db
from tests.conftest import Api, auth, count_statements
from tests.integration.helpers import error_messages

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def add(client: FlaskClient, slug: str, token: str | None, body: Any = "Nice!") -> Any:
    headers = auth(token) if token else {}
    return client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": body}}, headers=headers)


def comments(client: FlaskClient, slug: str, token: str | None = None, **params: Any) -> list[dict[str, Any]]:
    resp = client.get(f"/api/articles/{slug}/comments", query_string=params, headers=auth(token) if token else {})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert set(resp.json) == {"comments", "commentsCount"}
    return list(resp.json["comments"])


def delete(client: FlaskClient, slug: str, comment_id: Any, token: str | None) -> Any:
    return client.delete(f"/api/articles/{slug}/comments/{comment_id}", headers=auth(token) if token else {})


@pytest.fixture
def slug(api: Api) -> str:
    return str(api.create_article(api.register("alice"), "Commented")["slug"])


def test_add_comment_returns_200_with_the_comment(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    resp = add(client, slug, bob, "First!")
    assert resp.status_code == 200
    comment = resp.json["comment"]
    assert set(comment) == {"id", "createdAt", "updatedAt", "body", "author"}
    assert isinstance(comment["id"], int)
    assert comment["body"] == "First!"
    assert ISO.match(comment["createdAt"])
    assert comment["author"] == {"username": "bob", "bio": None, "image": None, "following": False}
    assert comments(client, slug) == [comment]


def test_a_comment_is_created_with_two_statements(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    assert add(client, slug, bob, "warm").status_code == 200  # the token's account check is behind us
    with count_statements(client.application) as statements:
        assert add(client, slug, bob, "counted").status_code == 200
    # The article's id with the author's profile, then the insert; SQLite adds its BEGIN IMMEDIATE.
    # Nothing asks whether the author follows themselves: following oneself is refused.
    expected = 2 if client.application.extensions["db"].dialect == "postgresql" else 3
    assert len(statements) == expected, statements


def test_a_comment_by_an_account_deleted_since_its_token_was_checked_is_401(
    client: FlaskClient, api: Api, slug: str
) -> None:
    bob = api.register("bob")
    assert add(client, slug, bob, "before").status_code == 200  # the token is now verified for a while
    with client.application.app_context(), get_db().transaction() as conn:
        conn.execute(sql("DELETE FROM users WHERE username = 'bob'"))
    assert error_messages(add(client, slug, bob, "after"), 401) == [messages.ACCOUNT_GONE]
    assert comments(client, slug) == []  # the first went with its account


def test_comments_are_listed_newest_first(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    for text in ("one", "two", "three"):
        assert add(client, slug, bob, text).status_code == 200
    assert [c["body"] for c in comments(client, slug)] == ["three", "two", "one"]
    assert [c["body"] for c in comments(client, slug, limit=2)] == ["three", "two"]
    assert [c["body"] for c in comments(client, slug, offset=2)] == ["one"]


def test_comments_show_following_for_the_viewer_only(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    carol = api.register("carol")
    add(client, slug, bob, "by bob")
    add(client, slug, carol, "by carol")
    client.post("/api/profiles/bob/follow", headers=auth(carol))
    seen_by_carol = {c["author"]["username"]: c["author"]["following"] for c in comments(client, slug, carol)}
    assert seen_by_carol == {"bob": True, "carol": False}
    assert all(c["author"]["following"] is False for c in comments(client, slug))
    assert all(c["author"]["following"] is False for c in comments(client, slug, bob))


def test_comments_of_an_article_without_any_is_an_empty_list(client: FlaskClient, slug: str) -> None:
    assert comments(client, slug) == []


def test_comments_are_per_article(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    other = api.create_article(bob, "Other")["slug"]
    add(client, slug, bob, "here")
    add(client, other, bob, "there")
    assert [c["body"] for c in comments(client, slug)] == ["here"]
    assert [c["body"] for c in comments(client, other)] == ["there"]


def test_comments_of_an_unknown_article_are_404(client: FlaskClient, api: Api) -> None:
    assert error_messages(client.get("/api/articles/nope/comments"), 404) == [messages.ARTICLE_NOT_FOUND]
    error_messages(add(client, "nope", api.register("bob")), 404)


def test_add_comment_without_a_token_is_401(client: FlaskClient, slug: str) -> None:
    error_messages(add(client, slug, None), 401)
    assert comments(client, slug) == []


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"comment": {}},
        {"comment": {"body": ""}},
        {"comment": {"body": 5}},
        {"comment": {"body": "a\x00b"}},
        {"comment": {"body": "x" * 10_001}},
    ],
)
def test_add_comment_with_an_empty_or_invalid_body_is_422(
    client: FlaskClient, api: Api, slug: str, payload: Any
) -> None:
    bob = api.register("bob")
    url = f"/api/articles/{slug}/comments"
    if payload is None:
        resp = client.post(url, data=b"", headers=auth(bob), content_type="application/json")
    else:
        resp = client.post(url, json=payload, headers=auth(bob))
    error_messages(resp, 422)
    assert comments(client, slug) == []


def test_author_deletes_a_comment_with_204(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    keep = add(client, slug, bob, "keep").json["comment"]
    gone = add(client, slug, bob, "gone").json["comment"]
    resp = delete(client, slug, gone["id"], bob)
    assert resp.status_code == 204
    assert resp.get_data() == b""
    assert comments(client, slug) == [keep]
    error_messages(delete(client, slug, gone["id"], bob), 404)


def test_delete_by_another_user_is_403_and_the_comment_stays(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    carol = api.register("carol")
    comment = add(client, slug, bob).json["comment"]
    assert error_messages(delete(client, slug, comment["id"], carol), 403) == [messages.FORBIDDEN]
    assert comments(client, slug) == [comment]


def test_delete_via_another_articles_slug_is_404(client: FlaskClient, api: Api, slug: str) -> None:
    bob = api.register("bob")
    other = api.create_article(bob, "Other")["slug"]
    comment = add(client, slug, bob).json["comment"]
    assert error_messages(delete(client, other, comment["id"], bob), 404) == [messages.COMMENT_NOT_FOUND]
    assert comments(client, slug) == [comment]


@pytest.mark.parametrize("comment_id", ["99999999999999999999", str(2**63 - 1), str(2**63), "12345"])
def test_delete_unknown_comment_id_is_404_not_500(client: FlaskClient, api: Api, slug: str, comment_id: str) -> None:
    bob = api.register("bob")
    error_messages(delete(client, slug, comment_id, bob), 404)


def test_delete_with_a_non_numeric_id_is_404(client: FlaskClient, api: Api, slug: str) -> None:
    error_messages(delete(client, slug, "abc", api.register("bob")), 404)


def test_delete_without_a_token_is_401(client: FlaskClient, api: Api, slug: str) -> None:
    comment = add(client, slug, api.register("bob")).json["comment"]
    error_messages(delete(client, slug, comment["id"], None), 401)
    assert comments(client, slug) == [comment]


def test_deleting_the_article_removes_its_comments(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice2")
    slug = api.create_article(alice, "Short lived")["slug"]
    add(client, slug, alice)
    assert client.delete(f"/api/articles/{slug}", headers=auth(alice)).status_code == 204
    error_messages(client.get(f"/api/articles/{slug}/comments"), 404)
