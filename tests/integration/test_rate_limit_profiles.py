"""Rate limits per profile: development (what `make run` gives) lets a person explore the API by hand;
production stays strict. Limits that guard guessing count failures in every profile."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service import create_app
from service.storage import migrate
from tests.conftest import auth
from tests.integration.test_rate_limits import assert_limited, limited_app, login, register

SECRET = "s" * 48


def profile_app(tmp_path: Path, profile: str) -> Flask:
    """An app with `profile`'s own limits (the Testing profile switches them off), on its own SQLite file."""
    settings = {"DATABASE_URL": f"sqlite:///{tmp_path}/{time.time_ns()}.db", "CACHE_KEY_PREFIX": f"{time.time_ns()}:"}
    app = create_app(settings, env={"APP_ENV": profile, "SECRET_KEY": SECRET})
    migrate.upgrade(app.extensions["db"].engine)
    return app


def try_register(client: FlaskClient, name: str, email: str | None = None) -> Any:
    body = {"user": {"username": name, "email": email or f"{name}@example.com", "password": "password123"}}
    return client.post("/api/users", json=body, environ_base={"REMOTE_ADDR": "10.0.0.1"})


def article(client: FlaskClient, token: str, title: str) -> Any:
    body = {"article": {"title": title, "description": "d", "body": "b"}}
    return client.post("/api/articles", json=body, headers=auth(token))


def test_in_development_rejected_registrations_do_not_use_up_the_limit(tmp_path: Path) -> None:
    client = profile_app(tmp_path, "development").test_client()
    register(client, "alice")
    # A person picking a username: taken, taken, taken ... each a 422, none counted.
    for attempt in range(8):
        assert try_register(client, "alice", f"other{attempt}@example.com").status_code == 422
    register(client, "alice2")


def test_in_development_a_person_can_write_a_lot_in_a_minute(tmp_path: Path) -> None:
    client = profile_app(tmp_path, "development").test_client()
    writer = register(client, "writer")
    register(client, "other")
    slugs = [article(client, writer, f"Article {i}").json["article"]["slug"] for i in range(30)]
    assert len(set(slugs)) == 30
    for i in range(30):
        body = {"comment": {"body": f"comment {i}"}}
        assert client.post(f"/api/articles/{slugs[0]}/comments", json=body, headers=auth(writer)).status_code == 200
    for _ in range(15):  # toggling back and forth, as one does when trying a button
        for method in (client.post, client.delete):
            assert method(f"/api/articles/{slugs[0]}/favorite", headers=auth(writer)).status_code == 200
            assert method("/api/profiles/other/follow", headers=auth(writer)).status_code == 200


@pytest.mark.parametrize("profile", ["development", "production"])
def test_log_in_failures_count_in_every_profile(tmp_path: Path, profile: str) -> None:
    client = profile_app(tmp_path, profile).test_client()
    register(client, "alice")
    # RATELIMIT_LOGIN_ACCOUNT is 10/minute in both; each guess from its own address.
    for i in range(10):
        assert login(client, "alice@example.com", REMOTE_ADDR=f"10.3.0.{i}").status_code == 401
    assert_limited(login(client, "alice@example.com", "password123", REMOTE_ADDR="10.3.1.1"))


def test_production_counts_every_registration_attempt(tmp_path: Path) -> None:
    client = profile_app(tmp_path, "production").test_client()
    register(client, "alice")
    # 5/minute per address, 422s included: "email has already been taken" tells whether an
    # account exists, so failures are what the limit must slow down.
    for attempt in range(4):
        assert try_register(client, "alice", f"other{attempt}@example.com").status_code == 422
    assert_limited(try_register(client, "bob"))


def test_production_limits_writes_as_documented(tmp_path: Path) -> None:
    client = profile_app(tmp_path, "production").test_client()
    writer = register(client, "writer")
    assert [article(client, writer, f"Article {i}").status_code for i in range(10)] == [201] * 10
    assert_limited(article(client, writer, "one too many"))


def test_the_profiles_limits_are_what_the_readme_documents() -> None:
    from service import settings as load

    production = load({"APP_ENV": "production", "SECRET_KEY": SECRET})
    development = load({"APP_ENV": "development"})
    expected = {
        "RATELIMIT_LOGIN_ACCOUNT": ("10/minute;50/hour", "10/minute;50/hour"),
        "RATELIMIT_LOGIN_ADDRESS": ("30/minute;300/hour", "30/minute;300/hour"),
        "RATELIMIT_REGISTER_ADDRESS": ("5/minute;30/hour", "60/minute;1000/hour"),
        "RATELIMIT_ARTICLES_USER": ("10/minute;200/day", "120/minute;5000/day"),
        "RATELIMIT_COMMENTS_USER": ("30/minute;1000/day", "300/minute;10000/day"),
        "RATELIMIT_FAVORITES_USER": ("60/minute;2000/day", "300/minute;10000/day"),
        "RATELIMIT_FOLLOWS_USER": ("60/minute;1000/day", "300/minute;10000/day"),
        "RATELIMIT_REGISTER_COUNT_FAILED": (True, False),
    }
    assert {name: (production[name], development[name]) for name in expected} == expected
    # Either profile takes its values from the environment.
    overridden = load({"APP_ENV": "development", "RATELIMIT_REGISTER_COUNT_FAILED": "1"})
    assert overridden["RATELIMIT_REGISTER_COUNT_FAILED"] is True
    assert (
        load({"APP_ENV": "production", "SECRET_KEY": SECRET, "RATELIMIT_ARTICLES_USER": "off"})[
            "RATELIMIT_ARTICLES_USER"
        ]
        == "off"
    )


def test_counting_successes_only_still_limits_successes(tmp_path: Path) -> None:
    app = limited_app(tmp_path, RATELIMIT_REGISTER_ADDRESS="2/minute", RATELIMIT_REGISTER_COUNT_FAILED=False)
    client = app.test_client()
    register(client, "r1")
    for _ in range(3):
        assert try_register(client, "r1").status_code == 422
    register(client, "r2")
    assert_limited(try_register(client, "r3"))
    assert_limited(try_register(client, "r1"))  # checked before any work, whatever the answer would be
