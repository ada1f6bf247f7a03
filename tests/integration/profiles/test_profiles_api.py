"""Public profiles and following, through the HTTP API."""

from __future__ import annotations

from flask.testing import FlaskClient

from service.api.errors import messages
from tests.conftest import Api, auth
from tests.integration.helpers import error_messages


def test_get_profile_returns_public_fields_only(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    client.put("/api/user", json={"user": {"bio": "hi", "image": "https://example.com/a.png"}}, headers=auth(token))
    resp = client.get("/api/profiles/alice")
    assert resp.status_code == 200
    assert resp.json == {
        "profile": {"username": "alice", "bio": "hi", "image": "https://example.com/a.png", "following": False}
    }


def test_get_unknown_profile_is_404(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    assert error_messages(client.get("/api/profiles/nobody"), 404) == [messages.PROFILE_NOT_FOUND]
    error_messages(client.get("/api/profiles/nobody", headers=auth(token)), 404)


def test_follow_and_unfollow_unknown_user_is_404(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    error_messages(client.post("/api/profiles/nobody/follow", headers=auth(token)), 404)
    error_messages(client.delete("/api/profiles/nobody/follow", headers=auth(token)), 404)


def test_follow_sets_following_for_the_follower_only(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    carol = api.register("carol")
    api.register("bob")
    resp = client.post("/api/profiles/bob/follow", headers=auth(alice))
    assert resp.status_code == 200
    assert resp.json["profile"]["username"] == "bob"
    assert resp.json["profile"]["following"] is True

    assert client.get("/api/profiles/bob", headers=auth(alice)).json["profile"]["following"] is True
    assert client.get("/api/profiles/bob", headers=auth(carol)).json["profile"]["following"] is False
    assert client.get("/api/profiles/bob").json["profile"]["following"] is False


def test_following_is_one_way(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    client.post("/api/profiles/bob/follow", headers=auth(alice))
    assert client.get("/api/profiles/alice", headers=auth(bob)).json["profile"]["following"] is False


def test_follow_twice_is_idempotent(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    api.create_article(bob, "Bob writes")
    for _ in range(2):
        resp = client.post("/api/profiles/bob/follow", headers=auth(alice))
        assert resp.status_code == 200
        assert resp.json["profile"]["following"] is True
    # Still one follow: the feed lists bob's article once.
    feed = client.get("/api/articles/feed", headers=auth(alice)).json
    assert feed["articlesCount"] == 1


def test_unfollow_twice_is_idempotent(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    api.register("bob")
    client.post("/api/profiles/bob/follow", headers=auth(alice))
    for _ in range(2):
        resp = client.delete("/api/profiles/bob/follow", headers=auth(alice))
        assert resp.status_code == 200
        assert resp.json["profile"]["following"] is False
    assert client.get("/api/profiles/bob", headers=auth(alice)).json["profile"]["following"] is False


def test_unfollow_without_following_first_is_fine(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    api.register("bob")
    resp = client.delete("/api/profiles/bob/follow", headers=auth(alice))
    assert resp.status_code == 200
    assert resp.json["profile"]["following"] is False


def test_follow_self_is_422(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    assert error_messages(client.post("/api/profiles/alice/follow", headers=auth(alice)), 422) == [
        messages.CANNOT_FOLLOW_SELF
    ]
    assert client.get("/api/profiles/alice", headers=auth(alice)).json["profile"]["following"] is False


def test_unfollow_self_is_harmless(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    resp = client.delete("/api/profiles/alice/follow", headers=auth(alice))
    assert resp.status_code == 200
    assert resp.json["profile"]["following"] is False


def test_follow_and_unfollow_without_a_token_are_401(client: FlaskClient, api: Api) -> None:
    api.register("bob")
    error_messages(client.post("/api/profiles/bob/follow"), 401)
    error_messages(client.delete("/api/profiles/bob/follow"), 401)


def test_get_profile_with_an_invalid_token_is_401(client: FlaskClient, api: Api) -> None:
    api.register("bob")
    error_messages(client.get("/api/profiles/bob", headers=auth("not-a-token")), 401)


def test_profile_reflects_a_username_change(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    client.post("/api/profiles/bob/follow", headers=auth(alice))
    client.put("/api/user", json={"user": {"username": "robert"}}, headers=auth(bob))
    error_messages(client.get("/api/profiles/bob"), 404)
    assert client.get("/api/profiles/robert", headers=auth(alice)).json["profile"]["following"] is True
