"""Every failure answers `{"errors": {"body": [str, ...]}}` with the right status."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service.api.errors import messages
from service.storage.db import get_db
from tests.conftest import Api, auth, build_app
from tests.integration.helpers import error_messages

USER = b'{"user":{"username":"alice","email":"alice@example.com","password":"password123"}}'


def post_raw(client: FlaskClient, url: str, data: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post(url, data=data, content_type="application/json", headers=headers or {})


# --- routing ------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/api/nope", "/nope", "/api/articles/a/b/c", "/api/profiles/"])
def test_unknown_url_is_404(client: FlaskClient, url: str) -> None:
    error_messages(client.get(url), 404)


def test_wrong_method_is_405_with_allow(client: FlaskClient) -> None:
    resp = client.patch("/api/user")
    error_messages(resp, 405)
    assert "PUT" in resp.headers["Allow"]
    error_messages(client.delete("/api/tags"), 405)


@pytest.mark.parametrize("method", ["put", "delete"])
def test_the_feed_url_is_not_an_article(client: FlaskClient, api: Api, method: str) -> None:
    # /api/articles/feed is the feed (GET only); no article is ever called "feed", so PUT and DELETE
    # there are 405, and OPTIONS/Allow lists what the URL really serves (found by schemathesis).
    token = api.register("alice")
    resp = getattr(client, method)("/api/articles/feed", json={"article": {"title": "x"}}, headers=auth(token))
    error_messages(resp, 405)
    assert set(resp.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert set(client.options("/api/articles/feed").headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}


def test_body_over_max_content_length_is_413(app: Flask, client: FlaskClient) -> None:
    assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 1024
    big = b'{"user":{"username":"alice","email":"a@b.c","password":"' + b"x" * (1024 * 1024) + b'"}}'
    assert error_messages(post_raw(client, "/api/users", big), 413) == [messages.TOO_LARGE]


@pytest.mark.parametrize("path", ["/api/profiles/a%00b", "/api/articles/a%00b", "/api/articles/a%00b/comments"])
def test_nul_byte_in_a_path_parameter_is_404(client: FlaskClient, path: str) -> None:
    error_messages(client.get(path), 404)


@pytest.mark.parametrize("param", ["tag", "author", "favorited"])
def test_nul_byte_in_a_list_filter_is_422(client: FlaskClient, param: str) -> None:
    error_messages(client.get("/api/articles", query_string={param: "a\x00b"}), 422)


# --- request bodies -----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"user": {"username": "alice",}}',
        b"not json",
        b"\xff\xfe",
        b"[]",
        b"[1, 2]",
        b"42",
        b'"string"',
        b"null",
        b'{"username":"alice","email":"alice@example.com","password":"password123"}',
        b'{"user": null}',
        b'{"user": []}',
        b'{"user":{"username":5,"email":"alice@example.com","password":"password123"}}',
        b'{"user":{"username":"alice","email":["alice@example.com"],"password":"password123"}}',
        b'{"user":{"username":"alice","email":"alice@example.com","password":true}}',
        b"[" * 20_000 + b"]" * 20_000,
        b'{"user":' + b"[" * 20_000 + b"]" * 20_000 + b"}",
        b'{"user":{"username":"alice","email":"a@b.c","password":"password123","x":'
        + b'{"a":' * 20_000
        + b"1"
        + b"}" * 20_000
        + b"}}",
        b'{"user":{"username":"alice","email":"a@b.c","password":"password123","x":'
        + b"[" * 20_000
        + b"]" * 20_000
        + b"}}",
        b'{"user":{"username":"\\ud800","email":"alice@example.com","password":"password123"}}',
        b'{"user":{"username":"alice","email":"alice@example.com","password":"pass\\ud800word"}}',
        b'{"user":{"username":"alice","email":"alice@example.com","password":"pass\xed\xa0\x80word"}}',
        b'{"user":{"username":"alice","email":"alice@example.com","password":"pass\xffword"}}',
    ],
    ids=lambda d: d[:40].decode("latin-1"),
)
def test_bad_bodies_are_422(client: FlaskClient, data: bytes) -> None:
    error_messages(post_raw(client, "/api/users", data), 422)
    assert post_raw(client, "/api/users", USER).status_code == 201


@pytest.mark.parametrize("bio", [b'"\\ud800"', b'"x\\udc00y"', b'"\xed\xa0\x80"', b'"\\ud800\\u0041"'])
def test_lone_surrogates_in_a_stored_field_are_422_and_nothing_changes(
    client: FlaskClient, api: Api, bio: bytes
) -> None:
    token = api.register("alice")
    resp = client.put(
        "/api/user", data=b'{"user":{"bio":' + bio + b"}}", content_type="application/json", headers=auth(token)
    )
    error_messages(resp, 422)
    assert client.get("/api/user", headers=auth(token)).json["user"]["bio"] is None


def test_a_valid_surrogate_pair_is_accepted(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    resp = client.put(
        "/api/user", data=b'{"user":{"bio":"\\ud83d\\ude00"}}', content_type="application/json", headers=auth(token)
    )
    assert resp.status_code == 200
    assert resp.json["user"]["bio"] == "\U0001f600"


def test_nul_byte_in_login_email_is_422(client: FlaskClient) -> None:
    resp = client.post("/api/users/login", json={"user": {"email": "a\x00@b.c", "password": "password123"}})
    error_messages(resp, 422)


# --- tokens -------------------------------------------------------------------


def make_token(app: Flask, claims: dict[str, Any], key: str | None = None, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key or app.config["SECRET_KEY"], algorithm=algorithm)


def unsigned_token(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]


@pytest.fixture
def user_id(app: Flask, api: Api) -> str:
    token = api.register("alice")
    return str(jwt.decode(token, app.config["SECRET_KEY"], algorithms=["HS256"])["sub"])


def test_a_token_made_with_the_secret_is_accepted(app: Flask, client: FlaskClient, user_id: str) -> None:
    token = make_token(app, {"sub": user_id, "exp": int(time.time()) + 60})
    assert client.get("/api/user", headers=auth(token)).json["user"]["username"] == "alice"


@pytest.mark.parametrize(
    "kind",
    [
        "forged-signature",
        "expired",
        "alg-none",
        "missing-exp",
        "missing-sub",
        "non-numeric-sub",
        "huge-sub",
        "zero-sub",
        "hs512",
        "garbage",
        "empty-parts",
        "tampered-payload",
    ],
)
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_bad_tokens_are_401(app: Flask, client: FlaskClient, user_id: str, kind: str) -> None:
    soon = int(time.time()) + 600
    good = make_token(app, {"sub": user_id, "exp": soon})
    other = make_token(app, {"sub": "999", "exp": soon})
    tokens = {
        "forged-signature": make_token(app, {"sub": user_id, "exp": soon}, key="another-secret-of-enough-length-xx"),
        "expired": make_token(app, {"sub": user_id, "exp": int(time.time()) - 120}),
        "alg-none": unsigned_token({"sub": user_id, "exp": soon}),
        "missing-exp": make_token(app, {"sub": user_id}),
        "missing-sub": make_token(app, {"exp": soon}),
        "non-numeric-sub": make_token(app, {"sub": "alice", "exp": soon}),
        "huge-sub": make_token(app, {"sub": "99999999999999999999", "exp": soon}),
        "zero-sub": make_token(app, {"sub": "0", "exp": soon}),
        "hs512": make_token(app, {"sub": user_id, "exp": soon}, algorithm="HS512"),
        "garbage": "garbage",
        "empty-parts": "..",
        "tampered-payload": ".".join([good.split(".")[0], other.split(".")[1], good.split(".")[2]]),
    }
    headers = auth(tokens[kind])
    assert error_messages(client.get("/api/user", headers=headers), 401) == [messages.UNAUTHORIZED]
    resp = client.get("/api/articles", headers=headers)
    assert resp.headers["WWW-Authenticate"] == "Token"
    error_messages(resp, 401)


def test_a_token_for_a_user_that_does_not_exist_cannot_read_the_current_user(app: Flask, client: FlaskClient) -> None:
    token = make_token(app, {"sub": "424242", "exp": int(time.time()) + 60})
    error_messages(client.get("/api/user", headers=auth(token)), 401)


# --- unexpected failures ----------------------------------------------------


def test_an_unexpected_exception_is_a_500_in_the_same_shape(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path}/boom.db")

    def boom() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/api/boom", "boom", boom)
    resp = app.test_client().get("/api/boom")
    assert error_messages(resp, 500) == [messages.INTERNAL]
    assert b"secret internals" not in resp.get_data()


def test_writes_with_the_token_of_a_deleted_user_are_401(app: Flask, api: Api) -> None:
    token = api.register("ghost")
    slug = api.create_article(api.register("author"), "Haunted")["slug"]
    with app.app_context(), get_db().transaction() as conn:
        conn.execute(text("DELETE FROM users WHERE username = 'ghost'"))
    attempts = [
        api.client.post(
            "/api/articles", json={"article": {"title": "t", "description": "d", "body": "b"}}, headers=auth(token)
        ),
        api.client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "boo"}}, headers=auth(token)),
        api.client.post(f"/api/articles/{slug}/favorite", headers=auth(token)),
        api.client.post("/api/profiles/author/follow", headers=auth(token)),
        api.client.get("/api/user", headers=auth(token)),
    ]
    assert [r.status_code for r in attempts] == [401] * 5
    assert all(set(r.json) == {"errors"} for r in attempts)
