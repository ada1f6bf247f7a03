"""Broken authentication (OWASP API2): forged, confused and stale tokens, on every operation.

`tests/integration/test_errors.py` checks the basic token failures (tampered signature, expired,
`alg: none`, missing `exp`/`sub`, HS512, garbage) on two endpoints; this file sends those and the
algorithm-confusion tricks to every operation that reads a token, taken from the OpenAPI document,
so a new route cannot forget its auth. Each answer is 401 in the error shape with
`WWW-Authenticate`, never a 5xx, and nothing is written. The 100 KB header through gunicorn is in
test_live_server.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from service.api.errors import messages
from service.storage.db import get_db
from tests.conftest import Api, auth
from tests.security.helpers import Operation, assert_error_shape, changed_tables, operations, snapshot


def b64(data: Any) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: Any, key: bytes | None, digest: Any = hashlib.sha256) -> str:
    """A JWT with any header at all, HMAC-signed with `key` (or with an empty signature)."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    signature = hmac.new(key, signing_input.encode(), digest).digest() if key is not None else b""
    return f"{signing_input}.{b64(signature)}"


def bad_authorization_headers(app: Flask, user_id: str) -> dict[str, str]:
    """name -> Authorization header value that must not authenticate anyone."""
    secret = app.config["SECRET_KEY"].encode()
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + 600}
    good = jwt.encode(claims, app.config["SECRET_KEY"], algorithm="HS256")
    head, body, _sig = good.split(".")
    tokens = {
        # Algorithm confusion: the header names another algorithm, the signature is an HMAC made
        # with the server's own secret (what a server that trusts the header's `alg` would check).
        "rs256-header-hmac-signature": handmade({"alg": "RS256", "typ": "JWT"}, claims, secret),
        "es256-header-hmac-signature": handmade({"alg": "ES256", "typ": "JWT"}, claims, secret),
        "hs384-signed-with-the-secret": handmade({"alg": "HS384", "typ": "JWT"}, claims, secret, hashlib.sha384),
        "rs256-header-random-signature": f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{body}.{b64(b'x' * 256)}",
        "alg-None-capitalised": handmade({"alg": "None", "typ": "JWT"}, claims, None),
        "alg-NONE-upper": handmade({"alg": "NONE", "typ": "JWT"}, claims, None),
        "alg-none-with-the-real-signature": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{body}.{_sig}",
        "no-alg": handmade({"typ": "JWT"}, claims, secret),
        "empty-signature": f"{head}.{body}.",
        "two-segments": f"{head}.{body}",
        "four-segments": f"{good}.{_sig}",
        # Keys named by the token itself are never fetched or used.
        "jku-and-kid-pointing-elsewhere": jwt.encode(
            claims,
            "attacker-key-attacker-key-attacker-key",
            algorithm="HS256",
            headers={"jku": "http://127.0.0.1:1/keys.json", "kid": "../../../../dev/null"},
        ),
        "signed-with-an-empty-key": handmade({"alg": "HS256", "typ": "JWT"}, claims, b""),
        "not-yet-valid-nbf": jwt.encode({**claims, "nbf": now + 3600}, app.config["SECRET_KEY"], "HS256"),
        "issued-in-the-future": jwt.encode({**claims, "iat": now + 3600}, app.config["SECRET_KEY"], "HS256"),
        "version-not-an-integer": jwt.encode({**claims, "ver": "0"}, app.config["SECRET_KEY"], "HS256"),
        "sub-as-a-number": handmade({"alg": "HS256", "typ": "JWT"}, {**claims, "sub": int(user_id)}, secret),
        "sub-negative": jwt.encode({**claims, "sub": "-1"}, app.config["SECRET_KEY"], "HS256"),
        "payload-not-json": f"{head}.{b64(b'not json')}.{_sig}",
        "payload-a-list": handmade({"alg": "HS256", "typ": "JWT"}, [1], secret),
        "non-ascii": "ünïcødé.tøkén.sïg",
        "100-kb-token": "A" * 100_000,
    }
    headers = {f"Token {name}": f"Token {token}" for name, token in tokens.items()}
    # The scheme must be Token or Bearer, followed by the token.
    headers |= {
        "Basic-scheme": "Basic YWxpY2U6cGFzc3dvcmQxMjM=",
        "JWT-scheme": f"JWT {good}",
        "no-scheme": good,
        "scheme-only": "Token",
        "scheme-and-spaces": "Token    ",
        "token-twice": f"Token {good} {good}",
    }
    return headers


@pytest.fixture
def user_id(app: Flask, api: Api) -> str:
    token = api.register("alice")
    return str(jwt.decode(token, app.config["SECRET_KEY"], algorithms=["HS256"])["sub"])


def token_operations(app: Flask) -> list[Operation]:
    ops = [op for op in operations(app) if op.auth != "none"]
    assert len(ops) >= 14  # every operation but register, login, tags, docs and health
    return ops


def dummy_url(op: Operation) -> str:
    return op.url(**{name: 1 if name == "comment_id" else "x" for name in op.path_params})


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_no_forged_or_malformed_token_authenticates_on_any_operation(
    app: Flask, client: FlaskClient, user_id: str
) -> None:
    # The real token works, so a 401 below is about the token and nothing else.
    good = jwt.encode({"sub": user_id, "exp": int(time.time()) + 600}, app.config["SECRET_KEY"], "HS256")
    assert client.get("/api/user", headers=auth(good)).status_code == 200
    before = snapshot(app)
    failures = []
    ops = token_operations(app)
    for name, header in bad_authorization_headers(app, user_id).items():
        for op in ops:
            resp = client.open(dummy_url(op), method=op.method, json={}, headers={"Authorization": header})
            if resp.status_code != 401 or resp.headers.get("WWW-Authenticate") != "Token":
                failures.append((name, op.key, resp.status_code, resp.get_data()[:120]))
                continue
            assert_error_shape(resp)
    assert failures == []
    assert changed_tables(before, snapshot(app)) == []


def test_the_token_of_a_deleted_account_is_refused_everywhere(app: Flask, client: FlaskClient, api: Api) -> None:
    """The account is deleted behind the API's back (there is no delete endpoint); a token made
    for it afterwards, as another replica or an attacker holding an old one would present it,
    opens nothing: 401 on every operation that reads a token, and no write happens."""
    alice = api.register("alice")
    ghost = api.register("ghost")
    slug = api.create_article(alice, "Haunted")["slug"]
    comment = client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "b"}}, headers=auth(alice))
    client.post(f"/api/articles/{slug}/favorite", headers=auth(ghost))
    client.post("/api/profiles/alice/follow", headers=auth(ghost))
    ghost_id = jwt.decode(ghost, app.config["SECRET_KEY"], algorithms=["HS256"])["sub"]
    with app.app_context(), get_db().transaction() as conn:
        conn.execute(text("DELETE FROM users WHERE id = :id"), {"id": int(ghost_id)})
    now = int(time.time())
    stale = jwt.encode({"sub": ghost_id, "iat": now, "exp": now + 600}, app.config["SECRET_KEY"], "HS256")
    values = {"slug": slug, "username": "alice", "comment_id": comment.json["comment"]["id"]}
    bodies = {
        "NewArticleRequest": {"article": {"title": "t", "description": "d", "body": "b"}},
        "UpdateArticleRequest": {"article": {"title": "t"}},
        "NewCommentRequest": {"comment": {"body": "b"}},
        "UpdateUserRequest": {"user": {"bio": "b"}},
    }
    before = snapshot(app)
    answers = {}
    for op in token_operations(app):
        resp = client.open(op.url(**values), method=op.method, json=bodies.get(op.body or ""), headers=auth(stale))
        answers[op.key] = resp.status_code
        assert_error_shape(resp)
    assert answers == dict.fromkeys(answers, 401)
    assert changed_tables(before, snapshot(app)) == []


def test_an_unknown_token_is_refused_even_where_the_token_is_optional(client: FlaskClient, api: Api) -> None:
    # Anonymous reads work; a bad token on the same read is an error, never a silent downgrade
    # to anonymous (a client would think it is signed in).
    api.create_article(api.register("alice"), "Public")
    assert client.get("/api/articles").status_code == 200
    resp = client.get("/api/articles", headers=auth("not-a-token"))
    assert resp.status_code == 401
    assert assert_error_shape(resp) == [messages.UNAUTHORIZED]
