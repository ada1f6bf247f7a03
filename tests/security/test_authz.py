"""Object- and property-level authorization (OWASP API1 BOLA, API3 BOPLA, API5).

Three users own articles, comments, favorites and follows. Every owner-only action is tried with
another user's token: 403 (404 when the object does not exist, or a comment id is used under an
article it does not belong to), and every table is unchanged, row for row. Then every read
endpoint is crawled as each user and anonymously: no response carries another user's email or any
password hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import product
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api.errors import messages
from tests.conftest import Api, auth
from tests.security.helpers import assert_error_shape, changed_tables, operations, snapshot

USERS = ("alice", "bob", "carol")


def email(user: str) -> str:
    # Distinctive, so a leak is found by a plain substring search of every response.
    return f"{user}.private-mailbox@example.org"


@dataclass
class World:
    tokens: dict[str, str]
    slugs: dict[str, str]  # owner -> slug of their article
    comments: dict[str, int]  # "<writer>-on-<article owner>" -> comment id
    writes: list[bytes]  # bodies of the set-up responses, checked for leaks too


@pytest.fixture
def world(client: FlaskClient, api: Api) -> World:
    writes: list[bytes] = []
    tokens = {user: api.register(user, email=email(user)) for user in USERS}
    for user in USERS:
        resp = client.put("/api/user", json={"user": {"bio": f"I am {user}"}}, headers=auth(tokens[user]))
        assert resp.status_code == 200
    slugs = {user: api.create_article(tokens[user], f"{user} writes", tags=["shared", user])["slug"] for user in USERS}
    comments = {}
    for writer, owner in (("alice", "alice"), ("bob", "alice"), ("carol", "alice"), ("carol", "bob")):
        resp = client.post(
            f"/api/articles/{slugs[owner]}/comments", json={"comment": {"body": "hi"}}, headers=auth(tokens[writer])
        )
        assert resp.status_code == 200
        writes.append(resp.get_data())
        comments[f"{writer}-on-{owner}"] = resp.json["comment"]["id"]
    for fan, owner in (("carol", "alice"), ("alice", "bob")):
        resp = client.post(f"/api/articles/{slugs[owner]}/favorite", headers=auth(tokens[fan]))
        writes.append(resp.get_data())
        resp = client.post(f"/api/profiles/{owner}/follow", headers=auth(tokens[fan]))
        writes.append(resp.get_data())
    return World(tokens, slugs, comments, writes)


# --- object level: another user's token changes nothing ---------------------------------------

# (operation, attacker, path values, body, expected status, expected message)
Attack = tuple[str, str, dict[str, Any], Any, int, str]


def attacks(w: World) -> list[Attack]:
    title = {"article": {"title": "Hijacked", "body": "pwned"}}
    return [
        ("PUT /api/articles/{slug}", "bob", {"slug": w.slugs["alice"]}, title, 403, messages.FORBIDDEN),
        ("PUT /api/articles/{slug}", "bob", {"slug": "no-such-article"}, title, 404, messages.ARTICLE_NOT_FOUND),
        ("DELETE /api/articles/{slug}", "bob", {"slug": w.slugs["alice"]}, None, 403, messages.FORBIDDEN),
        ("DELETE /api/articles/{slug}", "bob", {"slug": "no-such-article"}, None, 404, messages.ARTICLE_NOT_FOUND),
        # Someone else's comment on someone else's article; and on the attacker's own article.
        (
            "DELETE /api/articles/{slug}/comments/{comment_id}",
            "bob",
            {"slug": w.slugs["alice"], "comment_id": w.comments["alice-on-alice"]},
            None,
            403,
            messages.FORBIDDEN,
        ),
        (
            "DELETE /api/articles/{slug}/comments/{comment_id}",
            "bob",
            {"slug": w.slugs["bob"], "comment_id": w.comments["carol-on-bob"]},
            None,
            403,
            messages.FORBIDDEN,
        ),
        # The article's author may not delete a comment written by somebody else either.
        (
            "DELETE /api/articles/{slug}/comments/{comment_id}",
            "alice",
            {"slug": w.slugs["alice"], "comment_id": w.comments["bob-on-alice"]},
            None,
            403,
            messages.FORBIDDEN,
        ),
        # A comment id under an article it does not belong to: 404, even for the comment's own
        # writer, and even when the attacker owns the article named in the URL.
        (
            "DELETE /api/articles/{slug}/comments/{comment_id}",
            "bob",
            {"slug": w.slugs["bob"], "comment_id": w.comments["alice-on-alice"]},
            None,
            404,
            messages.COMMENT_NOT_FOUND,
        ),
        (
            "DELETE /api/articles/{slug}/comments/{comment_id}",
            "carol",
            {"slug": w.slugs["bob"], "comment_id": w.comments["carol-on-alice"]},
            None,
            404,
            messages.COMMENT_NOT_FOUND,
        ),
        (
            "DELETE /api/articles/{slug}/comments/{comment_id}",
            "bob",
            {"slug": w.slugs["alice"], "comment_id": 10**9},
            None,
            404,
            messages.COMMENT_NOT_FOUND,
        ),
        # Removing a favorite or a follow only ever touches the caller's own row.
        ("DELETE /api/articles/{slug}/favorite", "bob", {"slug": w.slugs["alice"]}, None, 200, ""),
        ("DELETE /api/profiles/{username}/follow", "bob", {"username": "alice"}, None, 200, ""),
        # The current user is the token's user: another user's name or email is refused.
        ("PUT /api/user", "bob", {}, {"user": {"username": "alice"}}, 422, messages.USERNAME_TAKEN),
        ("PUT /api/user", "bob", {}, {"user": {"email": email("alice").upper()}}, 422, messages.EMAIL_TAKEN),
    ]


def test_every_owner_only_operation_is_attacked_below(app: Flask) -> None:
    """A new PUT or DELETE route fails here until its cross-user attack is added to `attacks`."""
    writes = {op.key for op in operations(app) if op.method in ("put", "delete")}
    attacked = {attack[0] for attack in attacks(World({}, dict.fromkeys(USERS, "s"), _AnyId(), []))}
    assert writes - attacked == set()


class _AnyId(dict[str, int]):
    def __missing__(self, key: str) -> int:
        return 1


def test_another_users_token_cannot_change_their_objects(app: Flask, client: FlaskClient, world: World) -> None:
    by_key = {op.key: op for op in operations(app)}
    for key, attacker, values, body, status, message in attacks(world):
        op = by_key[key]
        before = snapshot(app)
        resp = client.open(op.url(**values), method=op.method, json=body, headers=auth(world.tokens[attacker]))
        assert resp.status_code == status, (key, attacker, values, resp.get_data())
        if message:
            assert assert_error_shape(resp) == [message]
        assert changed_tables(before, snapshot(app)) == [], (key, attacker, values)


def test_unfavorite_and_unfollow_by_another_user_leave_the_owners_rows_alone(client: FlaskClient, world: World) -> None:
    slug = world.slugs["alice"]
    resp = client.delete(f"/api/articles/{slug}/favorite", headers=auth(world.tokens["bob"]))
    assert resp.json["article"]["favorited"] is False
    assert resp.json["article"]["favoritesCount"] == 1  # carol's
    carol = client.get(f"/api/articles/{slug}", headers=auth(world.tokens["carol"])).json["article"]
    assert carol["favorited"] is True
    assert client.get("/api/profiles/alice", headers=auth(world.tokens["carol"])).json["profile"]["following"] is True


def refused_fields(resp: Any) -> set[str]:
    """The fields a 422 names as not accepted."""
    assert resp.status_code == 422, resp.get_data(as_text=True)
    return {m.split(" ", 1)[0] for m in resp.json["errors"]["body"] if " is not accepted here" in m}


def test_ids_and_owner_fields_in_a_user_update_are_refused_and_never_applied(
    app: Flask, client: FlaskClient, world: World
) -> None:
    before = snapshot(app)
    forged = {"id": 1, "user_id": 1, "token": world.tokens["alice"], "password_hash": "x", "following": True}
    resp = client.put("/api/user", json={"user": {"bio": "mine", **forged}}, headers=auth(world.tokens["bob"]))
    assert refused_fields(resp) == set(forged)
    assert changed_tables(before, snapshot(app)) == []
    # Without them the update applies to the token's user only.
    resp = client.put("/api/user", json={"user": {"bio": "mine"}}, headers=auth(world.tokens["bob"]))
    assert resp.status_code == 200
    assert resp.json["user"]["username"] == "bob"
    assert resp.json["user"]["email"] == email("bob")
    after = snapshot(app)
    assert changed_tables(before, after) == ["users"]
    changed = [row for row in after["users"] if row not in before["users"]]
    assert len(changed) == 1
    assert "bob" in changed[0] and "mine" in changed[0]
    assert "x" not in changed[0]  # the password hash is still a hash
    # Alice is untouched, and can still log in with her password.
    assert client.get("/api/user", headers=auth(world.tokens["alice"])).json["user"]["bio"] == "I am alice"
    login = {"user": {"email": email("alice"), "password": "password123"}}
    assert client.post("/api/users/login", json=login).status_code == 200


def test_comments_are_recorded_for_the_token_user_and_owner_fields_in_the_body_refused(
    app: Flask, client: FlaskClient, world: World
) -> None:
    slug = world.slugs["alice"]
    before = snapshot(app)
    forged = {"author": {"username": "alice"}, "id": 1, "article_id": 2, "createdAt": "2000-01-01"}
    resp = client.post(
        f"/api/articles/{slug}/comments",
        json={"comment": {"body": "mine", **forged}},
        headers=auth(world.tokens["bob"]),
    )
    assert refused_fields(resp) == set(forged)
    assert changed_tables(before, snapshot(app)) == []
    resp = client.post(
        f"/api/articles/{slug}/comments", json={"comment": {"body": "mine"}}, headers=auth(world.tokens["bob"])
    )
    assert resp.status_code == 200
    comment = resp.json["comment"]
    assert comment["author"]["username"] == "bob"
    assert comment["id"] not in world.comments.values()
    assert not comment["createdAt"].startswith("2000")
    listed = client.get(f"/api/articles/{slug}/comments").json["comments"]
    assert {c["id"] for c in listed} == {comment["id"], *(v for k, v in world.comments.items() if k.endswith("alice"))}


# --- excessive data exposure: crawl every read endpoint as everyone ---------------------------


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value).union(*(_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value))
    return set()


def _leaks(body: bytes, viewer: str | None, schema: bool = False) -> list[str]:
    text = body.decode("utf-8", "replace").lower()
    found = [f"email of {user}" for user in USERS if user != viewer and email(user).lower() in text]
    found += ["a password hash"] if "$argon2" in text else []
    if not schema and text.startswith(("{", "[")):  # the OpenAPI document names the fields, of course
        found += [f"field {k!r}" for k in _keys(json.loads(text)) if "password" in k or "hash" in k]
    return found


def _read_urls(app: Flask, world: World) -> list[str]:
    """A concrete URL for every GET operation and every combination of known path values,
    plus each list filter with every known value."""
    values: dict[str, list[Any]] = {
        "slug": list(world.slugs.values()),
        "username": list(USERS),
        "comment_id": list(world.comments.values()),
    }
    filters = {"tag": ["shared", *USERS], "author": list(USERS), "favorited": list(USERS)}
    urls = []
    for op in operations(app):
        if op.method != "get":
            continue
        unknown = set(op.path_params) - values.keys()
        assert not unknown, f"{op.key}: add example values for {unknown}"
        for combo in product(*(values[p] for p in op.path_params)):
            url = op.url(**dict(zip(op.path_params, combo, strict=True)))
            urls.append(url)
            for name in op.query_params.keys() & filters.keys():
                urls += [f"{url}?{name}={value}" for value in filters[name]]
    return urls


def test_no_response_shows_another_users_email_or_any_password_hash(
    app: Flask, client: FlaskClient, world: World
) -> None:
    urls = _read_urls(app, world)
    assert len(urls) > 20
    seen_own_email = 0
    for viewer, url in product([None, *USERS], urls):
        headers = auth(world.tokens[viewer]) if viewer else {}
        resp = client.get(url, headers=headers)
        assert resp.status_code < 500, (url, viewer)
        body = resp.get_data()
        assert _leaks(body, viewer, schema=url.endswith("openapi.json")) == [], (url, viewer, body[:300])
        assert _leaks(json.dumps(dict(resp.headers)).encode(), viewer) == [], (url, viewer)
        seen_own_email += viewer is not None and email(viewer).encode() in body
    # The search can find an email: each user's own one is in GET /api/user.
    assert seen_own_email >= len(USERS)
    for body in world.writes:
        assert _leaks(body, None) == []


def test_profiles_carry_only_public_fields(client: FlaskClient, world: World) -> None:
    for user in USERS:
        profile = client.get(f"/api/profiles/{user}", headers=auth(world.tokens["alice"])).json["profile"]
        assert set(profile) == {"username", "bio", "image", "following"}


# --- function level ------------------------------------------------------------------------------


def test_every_operation_that_needs_a_token_refuses_to_run_without_one(app: Flask, client: FlaskClient) -> None:
    before = snapshot(app)
    required = [op for op in operations(app) if op.auth == "required"]
    assert len(required) >= 10
    for op in required:
        values = {name: "x" if name != "comment_id" else 1 for name in op.path_params}
        resp = client.open(op.url(**values), method=op.method, json={})
        assert resp.status_code == 401, op.key
        assert assert_error_shape(resp) == [messages.UNAUTHORIZED]
    assert changed_tables(before, snapshot(app)) == []
