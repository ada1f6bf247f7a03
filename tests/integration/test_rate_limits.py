"""Rate limits (service/security/ratelimit.py) on real Redis, in process memory, and with Redis down or hung.

Limits are tiny here, set per test through the settings; every app has its own key prefix, so tests
never share counters. The Testing profile switches limits off; these tests switch them on.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from config import ConfigError
from service.api.errors import messages
from service.runtime import metrics
from tests.conftest import auth, build_app, scratch_database
from tests.integration.helpers import error_messages
from tests.live import free_port, live_server

BIG = "1000/minute"
# Every limit loose, so that a test tightens only the one it is about.
LOOSE = {
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_LOGIN_ACCOUNT": BIG,
    "RATELIMIT_LOGIN_ADDRESS": BIG,
    "RATELIMIT_REGISTER_ADDRESS": BIG,
    "RATELIMIT_ARTICLES_USER": BIG,
    "RATELIMIT_COMMENTS_USER": BIG,
    "RATELIMIT_FAVORITES_USER": BIG,
    "RATELIMIT_FOLLOWS_USER": BIG,
}


def limited_app(tmp_path: Path, **overrides: Any) -> Flask:
    """An app on its own SQLite file with the given limits on top of LOOSE ones."""
    return build_app(f"sqlite:///{tmp_path}/{time.time_ns()}.db", **{**LOOSE, **overrides})


def register(client: FlaskClient, name: str, address: str = "10.0.0.1") -> str:
    body = {"user": {"username": name, "email": f"{name}@example.com", "password": "password123"}}
    resp = client.post("/api/users", json=body, environ_base={"REMOTE_ADDR": address})
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return str(resp.json["user"]["token"])  # type: ignore[index]


def login(client: FlaskClient, email: str, password: str = "wrong-password", **environ: str) -> Any:
    return client.post(
        "/api/users/login",
        json={"user": {"email": email, "password": password}},
        environ_base={"REMOTE_ADDR": "10.0.0.1", **environ},
    )


def assert_limited(resp: Any) -> int:
    """`resp` is a 429 in the error shape, not cacheable, with Retry-After seconds; those seconds."""
    assert error_messages(resp, 429) == [messages.RATE_LIMITED]
    assert resp.headers["Cache-Control"] == "no-store"
    retry_after = int(resp.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    return retry_after


def rate_limited(scope: str) -> float:
    """This process's count of requests refused by `scope` (service.runtime.metrics)."""
    return metrics.REGISTRY.get_sample_value("conduit_rate_limited_total", {"scope": scope}) or 0.0


# --- log-in brute force ---------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Limits kept in process memory, or in the real Redis."""
    if request.param == "memory":
        return {}
    return {"REDIS_URL": request.getfixturevalue("redis_url")}


def test_login_attempts_per_account_are_limited_whatever_the_case_of_the_email(
    tmp_path: Path, storage: dict[str, Any]
) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ACCOUNT="3/minute", **storage).test_client()
    register(client, "alice")
    refused_before = rate_limited("login_account")
    for email in ("alice@example.com", "ALICE@example.com", "Alice@Example.COM"):
        assert login(client, email).status_code == 401
    # From another address, and with the right password: the account is closed for the window.
    assert_limited(login(client, "alice@example.com", REMOTE_ADDR="10.0.0.2"))
    assert_limited(login(client, "alice@example.com", "password123", REMOTE_ADDR="10.0.0.3"))
    assert rate_limited("login_account") == refused_before + 2
    # Another account from the same address is not affected.
    register(client, "bob")
    assert login(client, "bob@example.com", "password123").status_code == 200


def test_login_attempts_per_client_address_are_limited_across_accounts(tmp_path: Path, storage: dict[str, Any]) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ADDRESS="3/minute", **storage).test_client()
    for i in range(3):
        assert login(client, f"nobody{i}@example.com").status_code == 401
    assert_limited(login(client, "nobody9@example.com"))
    assert login(client, "nobody9@example.com", REMOTE_ADDR="10.0.0.2").status_code == 401


def test_unknown_email_and_wrong_password_share_one_message_until_the_limit(tmp_path: Path) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ADDRESS="2/minute").test_client()
    register(client, "carol")
    unknown = login(client, "nobody@example.com")
    wrong = login(client, "carol@example.com")
    assert error_messages(unknown, 401) == error_messages(wrong, 401) == [messages.LOGIN_FAILED]
    assert_limited(login(client, "carol@example.com", "password123"))


def test_registrations_per_client_address_are_limited(tmp_path: Path) -> None:
    client = limited_app(tmp_path, RATELIMIT_REGISTER_ADDRESS="2/minute").test_client()
    register(client, "r1")
    register(client, "r2")
    body = {"user": {"username": "r3", "email": "r3@example.com", "password": "password123"}}
    assert_limited(client.post("/api/users", json=body, environ_base={"REMOTE_ADDR": "10.0.0.1"}))
    register(client, "r3", address="10.0.0.2")


# --- writes per user -------------------------------------------------------------------------------


def test_writes_are_limited_per_user(tmp_path: Path, storage: dict[str, Any]) -> None:
    client = limited_app(
        tmp_path,
        RATELIMIT_ARTICLES_USER="2/minute",
        RATELIMIT_COMMENTS_USER="2/minute",
        RATELIMIT_FAVORITES_USER="2/minute",
        RATELIMIT_FOLLOWS_USER="2/minute",
        **storage,
    ).test_client()
    writer, other = register(client, "writer"), register(client, "other")

    def article(token: str, title: str) -> Any:
        body = {"article": {"title": title, "description": "d", "body": "b"}}
        return client.post("/api/articles", json=body, headers=auth(token))

    slug = article(writer, "one").json["article"]["slug"]
    assert article(writer, "two").status_code == 201
    assert_limited(article(writer, "three"))
    assert article(other, "theirs").status_code == 201  # a bucket per user

    comment = {"comment": {"body": "hi"}}
    for _ in range(2):
        assert client.post(f"/api/articles/{slug}/comments", json=comment, headers=auth(writer)).status_code == 200
    assert_limited(client.post(f"/api/articles/{slug}/comments", json=comment, headers=auth(writer)))

    # Favorite and unfavorite share one bucket (toggling is the abuse), as do follow and unfollow.
    assert client.post(f"/api/articles/{slug}/favorite", headers=auth(writer)).status_code == 200
    assert client.delete(f"/api/articles/{slug}/favorite", headers=auth(writer)).status_code == 200
    assert_limited(client.post(f"/api/articles/{slug}/favorite", headers=auth(writer)))
    assert client.post("/api/profiles/other/follow", headers=auth(writer)).status_code == 200
    assert client.delete("/api/profiles/other/follow", headers=auth(writer)).status_code == 200
    assert_limited(client.post("/api/profiles/other/follow", headers=auth(writer)))

    # Reads are never limited, and a rejected write changed nothing.
    assert client.get(f"/api/articles/{slug}", headers=auth(writer)).json["article"]["favoritesCount"] == 0
    assert len(client.get(f"/api/articles/{slug}/comments").json["comments"]) == 2


def test_anonymous_or_forged_writes_are_401_not_limited(tmp_path: Path) -> None:
    client = limited_app(tmp_path, RATELIMIT_FOLLOWS_USER="1/minute").test_client()
    register(client, "target")
    for headers in ({}, auth("forged.token.value"), {}, auth("forged.token.value")):
        error_messages(client.post("/api/profiles/target/follow", headers=headers), 401)


# --- client address ---------------------------------------------------------------------------------


def test_a_client_cannot_dodge_the_limit_with_its_own_x_forwarded_for(tmp_path: Path) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ADDRESS="2/minute").test_client()
    # Straight from the client (not a trusted proxy): the header is ignored.
    direct = {"REMOTE_ADDR": "10.0.0.1"}
    for i in range(2):
        headers = {"X-Forwarded-For": f"192.0.2.{i}"}
        resp = client.post("/api/users/login", json=_bad_login(i), headers=headers, environ_base=direct)
        assert resp.status_code == 401
    headers = {"X-Forwarded-For": "192.0.2.9"}
    assert_limited(client.post("/api/users/login", json=_bad_login(3), headers=headers, environ_base=direct))

    # Through the proxy on loopback: its own (rightmost) entry counts, whatever the client prepended.
    via_proxy = {"REMOTE_ADDR": "127.0.0.1"}
    for i in range(2):
        headers = {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7"}
        resp = client.post("/api/users/login", json=_bad_login(i), headers=headers, environ_base=via_proxy)
        assert resp.status_code == 401
    headers = {"X-Forwarded-For": "198.51.100.99, 203.0.113.7"}
    assert_limited(client.post("/api/users/login", json=_bad_login(5), headers=headers, environ_base=via_proxy))
    # A different client behind the same proxy has its own bucket.
    headers = {"X-Forwarded-For": "203.0.113.8"}
    assert (
        client.post("/api/users/login", json=_bad_login(6), headers=headers, environ_base=via_proxy).status_code == 401
    )


def test_ipv6_clients_share_a_bucket_per_64(tmp_path: Path) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ADDRESS="2/minute").test_client()
    assert login(client, "a@example.com", REMOTE_ADDR="2001:db8:1:2::1").status_code == 401
    assert login(client, "b@example.com", REMOTE_ADDR="2001:db8:1:2::ffff").status_code == 401
    assert_limited(login(client, "c@example.com", REMOTE_ADDR="2001:db8:1:2:abcd::1"))
    assert login(client, "d@example.com", REMOTE_ADDR="2001:db8:1:3::1").status_code == 401


def _bad_login(i: int) -> dict[str, Any]:
    return {"user": {"email": f"spray{i}@example.com", "password": "wrong-password"}}


# --- exemption by configuration only ------------------------------------------------------------------


def test_exempt_addresses_are_never_limited(tmp_path: Path) -> None:
    client = limited_app(
        tmp_path, RATELIMIT_LOGIN_ADDRESS="1/minute", RATELIMIT_EXEMPT_ADDRESSES="10.9.0.0/16, 192.0.2.1"
    ).test_client()
    for address in ("10.9.4.2", "10.9.4.2", "10.9.200.1", "192.0.2.1", "192.0.2.1"):
        assert login(client, "x@example.com", REMOTE_ADDR=address).status_code == 401
    assert login(client, "x@example.com", REMOTE_ADDR="10.8.0.1").status_code == 401
    assert_limited(login(client, "x@example.com", REMOTE_ADDR="10.8.0.1"))


def test_limits_are_off_only_when_configured_off(tmp_path: Path) -> None:
    off = build_app(
        f"sqlite:///{tmp_path}/off.db", **{**LOOSE, "RATELIMIT_ENABLED": False, "RATELIMIT_LOGIN_ADDRESS": "1/minute"}
    )
    client = off.test_client()
    assert all(login(client, "x@example.com").status_code == 401 for _ in range(3))
    # "off" removes one limit and keeps the others.
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ADDRESS="off", RATELIMIT_LOGIN_ACCOUNT="1/minute").test_client()
    assert [login(client, f"y{i}@example.com").status_code for i in range(3)] == [401, 401, 401]
    assert_limited(login(client, "y0@example.com"))


def test_the_production_profile_limits_by_default() -> None:
    from config import load

    settings = load({"APP_ENV": "production", "SECRET_KEY": "x" * 40})
    assert settings["RATELIMIT_ENABLED"] is True
    assert load({"APP_ENV": "testing", "RATELIMIT_ENABLED": "1"})["RATELIMIT_ENABLED"] is True
    assert (
        load({"APP_ENV": "production", "SECRET_KEY": "x" * 40, "RATELIMIT_ENABLED": "0"})["RATELIMIT_ENABLED"] is False
    )


@pytest.mark.parametrize(
    "setting",
    [
        {"RATELIMIT_LOGIN_ACCOUNT": "ten per fortnight"},
        {"RATELIMIT_STRATEGY": "leaky-bucket"},
        {"RATELIMIT_EXEMPT_ADDRESSES": "10.0.0.300"},
        {"FORWARDED_ALLOW_IPS": "proxy.internal"},
    ],
)
def test_a_bad_limit_setting_refuses_to_start(tmp_path: Path, setting: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        limited_app(tmp_path, **setting)


def test_the_openapi_document_shows_429_on_limited_operations_only(tmp_path: Path) -> None:
    paths = limited_app(tmp_path).test_client().get("/api/openapi.json").json["paths"]
    limited = {
        ("/api/users/login", "post"),
        ("/api/users", "post"),
        ("/api/articles", "post"),
        ("/api/articles/{slug}/comments", "post"),
        ("/api/articles/{slug}/favorite", "post"),
        ("/api/articles/{slug}/favorite", "delete"),
        ("/api/profiles/{username}/follow", "post"),
        ("/api/profiles/{username}/follow", "delete"),
    }
    documented = {
        (path, method) for path, ops in paths.items() for method, op in ops.items() if "429" in op["responses"]
    }
    assert documented == limited
    assert "Retry-After" in paths["/api/users/login"]["post"]["responses"]["429"]["headers"]


# --- Redis down or hung: still limiting, never a 500, never slow --------------------------------------------


@contextmanager
def hung_redis() -> Iterator[str]:
    """A TCP port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@contextmanager
def closed_port() -> Iterator[str]:
    yield f"redis://127.0.0.1:{free_port()}/0"


@pytest.mark.parametrize("outage", [closed_port, hung_redis])
def test_with_redis_down_limits_hold_per_process_without_errors_or_waits(tmp_path: Path, outage: Any) -> None:
    with outage() as url:
        client = limited_app(tmp_path, REDIS_URL=url, RATELIMIT_LOGIN_ACCOUNT="3/minute").test_client()
        register(client, "dora")
        statuses, slowest = [], 0.0
        for _ in range(5):
            started = time.perf_counter()
            resp = login(client, "dora@example.com")
            slowest = max(slowest, time.perf_counter() - started)
            statuses.append(resp.status_code)
        assert statuses == [401, 401, 401, 429, 429]
        assert_limited(login(client, "dora@example.com"))
        # The slowest pays one limiter timeout and one cache timeout (0.1 s each, measured 0.19 s in
        # all): 2.5 s is over 10x that, and half of the single 5 s try of redis-py's defaults.
        assert slowest < 2.5, slowest
        assert login(client, "dora@example.com", "password123", REMOTE_ADDR="10.0.0.2").status_code == 429


def test_limits_move_back_to_redis_when_it_recovers(tmp_path: Path, redis_url: str) -> None:
    app = limited_app(tmp_path, REDIS_URL=redis_url, RATELIMIT_LOGIN_ADDRESS="100/minute")
    limiter = app.extensions["ratelimit"].limiter
    client = app.test_client()
    limiter._storage_dead = True  # as after a failure; Redis is checked again 1 s later
    limiter._Limiter__last_check_backend = time.time() - 2
    assert login(client, "e@example.com").status_code == 401
    assert limiter._storage_dead is False
    keys = redis.Redis.from_url(redis_url).keys(app.config["CACHE_KEY_PREFIX"] + "ratelimit:*")
    assert keys


# --- shared by every worker through Redis (live gunicorn) ---------------------------------------------------


def _post(
    base: str, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def _access_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for text in path.read_text().splitlines():
        try:
            lines.append(json.loads(text))
        except ValueError:
            continue
    return lines


@pytest.mark.postgres
def test_limits_are_shared_by_all_workers_through_redis(redis_url: str, tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    env = {
        "REDIS_URL": redis_url,
        "RATELIMIT_ENABLED": "1",
        "RATELIMIT_LOGIN_ACCOUNT": "5/minute",
        "RATELIMIT_LOGIN_ADDRESS": BIG,
        "RATELIMIT_REGISTER_ADDRESS": BIG,
        # The access line names the worker (pid) that served each request: both must have.
        "ACCESS_LOG": str(access_log),
    }
    with scratch_database("conduit_ratelimit") as url, live_server(url, workers=2, **env) as base:
        # Which worker accepts a connection is up to the kernel: repeat the burst (a fresh account
        # each time) until both workers have served log-in attempts; each burst must allow exactly 5.
        pids: set[str] = set()
        for burst in range(5):
            name = f"frank{burst}"
            body = {"user": {"username": name, "email": f"{name}@example.com", "password": "password123"}}
            assert _post(base, "/api/users", body)[0] == 201
            wrong = {"user": {"email": f"{name.upper()}@example.com", "password": "wrong-password"}}
            with ThreadPoolExecutor(8) as pool:
                replies = list(pool.map(lambda body: _post(base, "/api/users/login", body), [wrong] * 30))
            statuses = Counter(status for status, _ in replies)
            assert statuses == {401: 5, 429: 25}, statuses
            assert all(1 <= int(headers["Retry-After"]) <= 60 for status, headers in replies if status == 429)
            pids = {line["pid"] for line in _access_lines(access_log) if line.get("path") == "/api/users/login"}
            if len(pids) == 2:
                break
        assert len(pids) == 2, "both workers must have served log-in attempts"
