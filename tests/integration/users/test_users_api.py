"""Registration, login and the current user, through the HTTP API."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from service.api.errors import messages
from tests.conftest import Api, auth
from tests.integration.helpers import error_messages


def register(client: FlaskClient, **user: Any) -> Any:
    return client.post("/api/users", json={"user": user})


def login(client: FlaskClient, email: str, password: str) -> Any:
    return client.post("/api/users/login", json={"user": {"email": email, "password": password}})


def update(client: FlaskClient, token: str, **fields: Any) -> Any:
    return client.put("/api/user", json={"user": fields}, headers=auth(token))


# --- registration -----------------------------------------------------------


def test_register_returns_201_with_the_user_and_a_working_token(client: FlaskClient) -> None:
    resp = register(client, username="alice", email="alice@example.com", password="password123")
    assert resp.status_code == 201
    user = resp.json["user"]
    assert set(user) == {"email", "token", "username", "bio", "image"}
    assert user["username"] == "alice"
    assert user["email"] == "alice@example.com"
    assert user["bio"] is None
    assert user["image"] is None
    me = client.get("/api/user", headers=auth(user["token"]))
    assert me.status_code == 200
    assert me.json["user"]["username"] == "alice"


def test_register_stores_the_email_lower_cased(client: FlaskClient) -> None:
    resp = register(client, username="alice", email="Alice@Example.COM", password="password123")
    assert resp.status_code == 201
    assert resp.json["user"]["email"] == "alice@example.com"
    assert login(client, "alice@example.com", "password123").status_code == 200
    assert login(client, "ALICE@example.com", "password123").status_code == 200


def test_register_with_a_taken_username_is_422(client: FlaskClient, api: Api) -> None:
    api.register("alice")
    resp = register(client, username="alice", email="other@example.com", password="password123")
    assert error_messages(resp, 422) == ["username has already been taken"]


def test_register_with_a_taken_email_in_other_case_is_422(client: FlaskClient, api: Api) -> None:
    api.register("alice", email="alice@example.com")
    resp = register(client, username="bob", email="ALICE@Example.com", password="password123")
    assert error_messages(resp, 422) == [messages.EMAIL_TAKEN]


def test_register_with_taken_username_and_email_reports_both(client: FlaskClient, api: Api) -> None:
    api.register("alice")
    resp = register(client, username="alice", email="alice@example.com", password="password123")
    assert sorted(error_messages(resp, 422)) == sorted([messages.USERNAME_TAKEN, messages.EMAIL_TAKEN])


# --- login ------------------------------------------------------------------


def test_login_returns_the_user_with_a_working_token(client: FlaskClient, api: Api) -> None:
    api.register("alice")
    resp = login(client, "alice@example.com", "password123")
    assert resp.status_code == 200
    assert resp.json["user"]["username"] == "alice"
    me = client.get("/api/user", headers=auth(resp.json["user"]["token"]))
    assert me.status_code == 200
    assert me.json["user"]["email"] == "alice@example.com"


def test_wrong_password_and_unknown_email_give_the_same_401(client: FlaskClient, api: Api) -> None:
    api.register("alice")
    wrong_password = login(client, "alice@example.com", "not-the-password")
    unknown_email = login(client, "nobody@example.com", "password123")
    assert error_messages(wrong_password, 401) == [messages.LOGIN_FAILED]
    assert wrong_password.get_data() == unknown_email.get_data()
    assert unknown_email.status_code == 401


# --- current user -----------------------------------------------------------


def test_current_user_without_a_token_is_401(client: FlaskClient) -> None:
    error_messages(client.get("/api/user"), 401)


@pytest.mark.parametrize("scheme", ["Token", "Bearer", "token", "bearer"])
def test_current_user_accepts_token_and_bearer_schemes(client: FlaskClient, api: Api, scheme: str) -> None:
    token = api.register("alice")
    resp = client.get("/api/user", headers=auth(token, scheme))
    assert resp.status_code == 200
    assert resp.json["user"]["username"] == "alice"


@pytest.mark.parametrize("header", ["Basic abc", "Token", "Token ", "tokenabc"])
def test_current_user_with_a_malformed_authorization_header_is_401(client: FlaskClient, header: str) -> None:
    error_messages(client.get("/api/user", headers={"Authorization": header}), 401)


# --- update -----------------------------------------------------------------


def test_update_changes_only_the_fields_sent(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    resp = update(client, token, bio="I write", image="https://example.com/a.png")
    assert resp.status_code == 200
    user = resp.json["user"]
    assert (user["username"], user["email"]) == ("alice", "alice@example.com")
    assert (user["bio"], user["image"]) == ("I write", "https://example.com/a.png")

    resp = update(client, token, username="alice2")
    assert resp.status_code == 200
    assert resp.json["user"]["username"] == "alice2"
    assert resp.json["user"]["bio"] == "I write"
    assert client.get("/api/profiles/alice2").json["profile"]["bio"] == "I write"


def test_update_can_clear_bio_and_image_with_null(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    update(client, token, bio="b", image="https://example.com/a.png")
    resp = update(client, token, bio=None, image=None)
    assert resp.status_code == 200
    assert resp.json["user"]["bio"] is None
    assert resp.json["user"]["image"] is None
    assert client.get("/api/user", headers=auth(token)).json["user"]["bio"] is None


def test_update_email_is_lower_cased_and_used_for_login(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    resp = update(client, token, email="New@Example.com")
    assert resp.json["user"]["email"] == "new@example.com"
    assert login(client, "new@example.com", "password123").status_code == 200
    error_messages(login(client, "alice@example.com", "password123"), 401)


def test_password_change_takes_effect_for_login_at_once(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    assert update(client, token, password="brand-new-secret").status_code == 200
    assert login(client, "alice@example.com", "brand-new-secret").status_code == 200
    error_messages(login(client, "alice@example.com", "password123"), 401)


def test_update_to_another_users_username_is_422_and_changes_nothing(client: FlaskClient, api: Api) -> None:
    api.register("alice")
    token = api.register("bob")
    resp = update(client, token, username="alice", bio="changed")
    assert error_messages(resp, 422) == [messages.USERNAME_TAKEN]
    me = client.get("/api/user", headers=auth(token)).json["user"]
    assert (me["username"], me["bio"]) == ("bob", None)


def test_update_to_another_users_email_in_other_case_is_422(client: FlaskClient, api: Api) -> None:
    api.register("alice")
    token = api.register("bob")
    resp = update(client, token, email="ALICE@example.com")
    assert error_messages(resp, 422) == [messages.EMAIL_TAKEN]
    assert client.get("/api/user", headers=auth(token)).json["user"]["email"] == "bob@example.com"


def test_update_to_ones_own_username_and_email_is_allowed(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    resp = update(client, token, username="alice", email="alice@example.com")
    assert resp.status_code == 200
    assert resp.json["user"]["username"] == "alice"


def test_update_without_a_token_is_401(client: FlaskClient) -> None:
    error_messages(client.put("/api/user", json={"user": {"bio": "x"}}), 401)


# --- validation -------------------------------------------------------------

VALID = {"username": "alice", "email": "alice@example.com", "password": "password123"}


@pytest.mark.parametrize(
    "field, value",
    [
        ("password", "short7!"),
        ("password", "x" * 257),
        ("username", "has space"),
        ("username", ""),
        ("username", "u" * 41),
        ("username", "a/b"),
        ("email", "not-an-email"),
        ("email", "a@" + "b" * 260),
        ("email", "a b@example.com"),
        ("password", "pass\x00word123"),
    ],
)
def test_register_rejects_invalid_fields_with_422(client: FlaskClient, field: str, value: str) -> None:
    resp = register(client, **{**VALID, field: value})
    error_messages(resp, 422)
    assert login(client, "alice@example.com", "password123").status_code == 401


@pytest.mark.parametrize("missing", ["username", "email", "password"])
def test_register_without_a_required_field_is_422(client: FlaskClient, missing: str) -> None:
    user = {k: v for k, v in VALID.items() if k != missing}
    error_messages(register(client, **user), 422)


@pytest.mark.parametrize(
    "field, value",
    [
        ("bio", "nul\x00byte"),
        ("bio", "b" * 4097),
        ("image", "i" * 2049),
        ("image", "a\x00b"),
        ("password", "short"),
        ("username", "with space"),
        ("username", None),
        ("email", None),
    ],
)
def test_update_rejects_invalid_fields_with_422(client: FlaskClient, api: Api, field: str, value: Any) -> None:
    token = api.register("alice")
    error_messages(update(client, token, **{field: value}), 422)
    me = client.get("/api/user", headers=auth(token)).json["user"]
    assert (me["username"], me["email"], me["bio"], me["image"]) == ("alice", "alice@example.com", None, None)


def test_bio_at_the_length_limit_is_accepted(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    resp = update(client, token, bio="b" * 4096)
    assert resp.status_code == 200
    assert len(resp.json["user"]["bio"]) == 4096
