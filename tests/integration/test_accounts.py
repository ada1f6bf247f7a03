"""Account hardening: no user enumeration, one account per email whatever its case, and a password
change that ends the old password and the old tokens (in every worker, within TOKEN_RECHECK_SECONDS).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import argon2
import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from service.api.errors import messages
from service.storage import migrate
from service.storage.db import get_db
from tests.conftest import Api, auth, build_app, scratch_database
from tests.integration.helpers import error_messages
from tests.live import live_server


def login(client: FlaskClient, email: str, password: str) -> Any:
    return client.post("/api/users/login", json={"user": {"email": email, "password": password}})


# --- no user enumeration -----------------------------------------------------------------------------


def test_unknown_email_costs_one_argon2_verification_like_a_wrong_password(
    app: Flask, client: FlaskClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown email verifies a dummy hash made with the same parameters, exactly once, as a wrong
    password verifies the real one: the same work, so the same time (without it: ~10x faster)."""
    api.register("timed")
    passwords = app.extensions["passwords"]
    real_verify = passwords._verify
    verified: list[str] = []  # the hash of every Argon2 verification, in order

    def counting_verify(password_hash: str, password: str) -> bool:
        verified.append(password_hash)
        return bool(real_verify(password_hash, password))

    monkeypatch.setattr(passwords, "_verify", counting_verify)
    for _ in range(2):  # the first unknown email also makes the dummy hash; the count must not change
        assert login(client, "timed@example.com", "wrong-password").status_code == 401
        assert login(client, "nobody@example.com", "wrong-password").status_code == 401
    wrong, unknown = verified[0], verified[1]
    assert verified == [wrong, unknown, wrong, unknown]
    assert unknown != wrong
    assert argon2.extract_parameters(unknown) == argon2.extract_parameters(wrong)


def test_unknown_email_and_wrong_password_answer_byte_for_byte_the_same(client: FlaskClient, api: Api) -> None:
    api.register("same")
    unknown = login(client, "nobody@example.com", "password123")
    wrong = login(client, "same@example.com", "wrong-password")
    assert error_messages(unknown, 401) == [messages.LOGIN_FAILED]
    assert (unknown.status_code, unknown.get_data(), unknown.headers.get("WWW-Authenticate")) == (
        wrong.status_code,
        wrong.get_data(),
        wrong.headers.get("WWW-Authenticate"),
    )


# --- one account per email, compared case-insensitively ---------------------------------------------


@pytest.mark.parametrize("variants", [["Foo@x.io", "foo@x.io", "FOO@X.IO"], ["Émile@x.io", "émile@x.io", "ÉMILE@X.IO"]])
def test_racing_registrations_of_one_email_in_any_case_create_one_account(app: Flask, variants: list[str]) -> None:
    def register(i: int) -> int:
        body = {"user": {"username": f"racer{i}", "email": variants[i % len(variants)], "password": "password123"}}
        return app.test_client().post("/api/users", json=body).status_code

    with ThreadPoolExecutor(6) as pool:
        statuses = Counter(pool.map(register, range(6)))
    assert statuses == {201: 1, 422: 5}
    with app.app_context(), get_db().read() as conn:
        emails = conn.execute(text("SELECT email FROM users")).scalars().all()
    assert emails == [variants[1]]  # stored lower-cased
    for variant in variants:
        assert login(app.test_client(), variant, "password123").status_code == 200


# --- a password change ends the old password and the old tokens -------------------------------------


def test_a_password_change_revokes_older_tokens_and_the_old_password_at_once(client: FlaskClient, api: Api) -> None:
    old_token = api.register("pat", password="old-password")
    other_session = login(client, "pat@example.com", "old-password").json["user"]["token"]
    resp = client.put("/api/user", json={"user": {"password": "new-password"}}, headers=auth(old_token))
    assert resp.status_code == 200
    new_token = resp.json["user"]["token"]

    for token in (old_token, other_session):
        assert error_messages(client.get("/api/user", headers=auth(token)), 401) == [messages.TOKEN_REVOKED]
    assert client.get("/api/user", headers=auth(new_token)).json["user"]["username"] == "pat"
    error_messages(login(client, "pat@example.com", "old-password"), 401)
    fresh = login(client, "pat@example.com", "new-password").json["user"]["token"]
    assert client.get("/api/user", headers=auth(fresh)).status_code == 200


def test_a_password_change_in_the_same_second_as_a_token_still_revokes_it(
    client: FlaskClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wall clock stands still: issue, change and re-use all fall in one second (and one `iat`)."""
    frozen = time.time()
    monkeypatch.setattr(time, "time", lambda: frozen)
    old_token = api.register("sam", password="old-password")
    resp = client.put("/api/user", json={"user": {"password": "new-password"}}, headers=auth(old_token))
    assert resp.status_code == 200
    new_token = resp.json["user"]["token"]

    assert error_messages(client.get("/api/user", headers=auth(old_token)), 401) == [messages.TOKEN_REVOKED]
    assert client.get("/api/user", headers=auth(new_token)).json["user"]["username"] == "sam"


def test_other_profile_changes_keep_existing_tokens(client: FlaskClient, api: Api) -> None:
    token = api.register("kim")
    assert (
        client.put(
            "/api/user", json={"user": {"bio": "hi", "email": "Kim2@example.com"}}, headers=auth(token)
        ).status_code
        == 200
    )
    assert client.get("/api/user", headers=auth(token)).json["user"]["email"] == "kim2@example.com"


def test_another_workers_cached_token_is_rechecked_after_token_recheck_seconds(tmp_path: Path) -> None:
    """Two apps on one database stand for two workers, each with its own verified-token cache."""
    url = f"sqlite:///{tmp_path}/two.db"
    one, two = build_app(url, TOKEN_RECHECK_SECONDS=0.5), build_app(url, TOKEN_RECHECK_SECONDS=0.5)
    token = Api(one.test_client()).register("lee", password="old-password")
    assert two.test_client().get("/api/user", headers=auth(token)).status_code == 200  # cached in `two`
    changed = one.test_client().put("/api/user", json={"user": {"password": "new-password"}}, headers=auth(token))
    assert changed.status_code == 200
    time.sleep(0.6)  # TOKEN_RECHECK_SECONDS
    error_messages(two.test_client().get("/api/user", headers=auth(token)), 401)


# --- across real workers --------------------------------------------------------------------------


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Token {token}"} if token else {})}
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def _pids(access_log: Path, path: str) -> set[int]:
    pids = set()
    for line in access_log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("path") == path:
            pids.add(entry["pid"])
    return pids


@pytest.mark.postgres
def test_a_password_change_holds_in_every_worker(tmp_path: Path) -> None:
    access_log = tmp_path / "access.log"
    env = {"TOKEN_RECHECK_SECONDS": "1", "ACCESS_LOG": str(access_log)}
    with scratch_database("conduit_accounts") as url, live_server(url, workers=2, **env) as base:
        user = {"username": "max", "email": "Max@example.com", "password": "old-password"}
        status, body = _call(base, "POST", "/api/users", {"user": user})
        assert status == 201
        old_token = body["user"]["token"]
        # Warm both workers' token caches (parallel connections reach both).
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda _: _call(base, "GET", "/api/user", token=old_token)[0], range(40))) == {200}
        status, body = _call(base, "PUT", "/api/user", {"user": {"password": "new-password"}}, old_token)
        assert status == 200
        new_token = body["user"]["token"]
        time.sleep(1.2)  # TOKEN_RECHECK_SECONDS
        access_log.write_text("")
        with ThreadPoolExecutor(8) as pool:
            old = list(pool.map(lambda _: _call(base, "GET", "/api/user", token=old_token)[0], range(40)))
            new = list(pool.map(lambda _: _call(base, "GET", "/api/user", token=new_token)[0], range(20)))
            logins = list(
                pool.map(
                    lambda password: _call(
                        base, "POST", "/api/users/login", {"user": {"email": "max@EXAMPLE.com", "password": password}}
                    )[0],
                    ["old-password"] * 10 + ["new-password"] * 10,
                )
            )
        assert set(old) == {401}
        assert set(new) == {200}
        assert logins == [401] * 10 + [200] * 10
    assert len(_pids(access_log, "/api/user")) == 2, "both workers must have answered the old token"


# --- migrations 0003 and 0004 on existing data -----------------------------------------------------------


def _database_before(url: str, version: str, *statements: str, **params: Any) -> None:
    """Create the schema as it was before migration `version` and run `statements` (with `params`) on it."""
    parsed = make_url(url)
    driver = parsed.drivername.split("+")[0]
    engine = create_engine(parsed.set(drivername=driver + ("+psycopg2" if driver == "postgresql" else "")))
    with engine.begin() as conn:
        migrate.applied(conn)
        for migration in migrate.available(engine.dialect.name):
            if migration.version >= version:
                break
            for statement in migration.statements():
                conn.exec_driver_sql(statement)
            conn.execute(migrate.INSERT_APPLIED, {"version": migration.version})
        for statement in statements:
            conn.execute(text(statement), {"now": "2020-01-01 00:00:00+00", **params})
    engine.dispose()


def _legacy_token(app: Flask, user_id: int, issued: int) -> str:
    """A token as releases before migration 0004 issued them: no `ver` claim."""
    return jwt.encode({"sub": str(user_id), "iat": issued, "exp": int(time.time()) + 60}, app.config["SECRET_KEY"])


@contextmanager
def _database_url(tmp_path: Path, dialect: str, name: str) -> Iterator[str]:
    if dialect == "sqlite":
        yield f"sqlite:///{tmp_path}/{name}.db"
    else:
        with scratch_database(f"conduit_{name}") as url:
            yield url


INSERT_OLD_USER = (
    "INSERT INTO users (username, email, password_hash, created_at, updated_at) "
    "VALUES ('old', 'old@example.com', 'x', :now, :now)"
)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0003_keeps_existing_accounts_and_their_tokens(tmp_path: Path, dialect: str) -> None:
    with _database_url(tmp_path, dialect, "m0003") as url:
        _database_before(url, "0003", INSERT_OLD_USER)
        app = build_app(url)  # upgrades: 0003 runs on the existing row
        with app.app_context(), get_db().read() as conn:
            row = conn.execute(text("SELECT id, tokens_valid_after FROM users WHERE username = 'old'")).one()
        assert row.tokens_valid_after == 0
        # A token issued before the upgrade (any `iat`) still works.
        token = _legacy_token(app, row.id, issued=1)
        assert app.test_client().get("/api/user", headers=auth(token)).json["user"]["username"] == "old"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_migration_0004_keeps_existing_tokens_and_earlier_revocations(tmp_path: Path, dialect: str) -> None:
    """Tokens without `ver` count as version 0; a password change made under 0003 still revokes."""
    changed_at = int(time.time()) - 100
    with _database_url(tmp_path, dialect, "m0004") as url:
        _database_before(
            url,
            "0004",
            INSERT_OLD_USER,
            "INSERT INTO users (username, email, password_hash, created_at, updated_at, tokens_valid_after) "
            "VALUES ('changed', 'changed@example.com', 'x', :now, :now, :changed_at)",
            changed_at=changed_at,
        )
        app = build_app(url)  # upgrades: 0004 runs on the existing rows
        with app.app_context(), get_db().read() as conn:
            ids = dict(conn.execute(text("SELECT username, id FROM users WHERE token_version = 0")).all())
        assert ids.keys() == {"old", "changed"}
        client = app.test_client()

        def me(token: str) -> Any:
            return client.get("/api/user", headers=auth(token))

        old = _legacy_token(app, ids["old"], issued=1)
        assert me(old).json["user"]["username"] == "old"
        assert me(_legacy_token(app, ids["changed"], issued=changed_at + 1)).json["user"]["username"] == "changed"
        before_change = _legacy_token(app, ids["changed"], issued=changed_at - 1)
        assert error_messages(me(before_change), 401) == [messages.TOKEN_REVOKED]

        # The first password change after the upgrade revokes the tokens without `ver` too.
        resp = client.put("/api/user", json={"user": {"password": "new-password"}}, headers=auth(old))
        assert resp.status_code == 200
        assert error_messages(me(old), 401) == [messages.TOKEN_REVOKED]
        assert me(resp.json["user"]["token"]).json["user"]["username"] == "old"
