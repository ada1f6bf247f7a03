"""Fixtures shared by every test layer.

PostgreSQL comes from TEST_DATABASE_URL or DATABASE_URL (default: the local
server). Each test session creates its own database and drops it at the end.
When PostgreSQL is unreachable the PostgreSQL tests are skipped locally but
fail under CI (CI=true) or REQUIRE_SERVICES=1: a missing service is never a
silent pass there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from service import create_app, migrate
from service.db import get_db

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = ("comments", "favorites", "article_tags", "articles", "follows", "users", "idempotency_keys")


def _services_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("REQUIRE_SERVICES") == "1"


def _admin_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL") or DEFAULT_PG
    if not url.startswith("postgres"):
        url = DEFAULT_PG
    return url.replace("postgres://", "postgresql://", 1)


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """Create a fresh PostgreSQL database; yield its URL; drop it afterwards."""
    admin_url = make_url(_admin_url()).set(drivername="postgresql+psycopg2")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        message = f"PostgreSQL at {make_url(_admin_url()).render_as_string()} is unavailable: {exc}"
        if _services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    try:
        yield make_url(_admin_url()).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with scratch_database("conduit_test") as url:
        yield url


def build_app(database_url: str, **overrides: Any) -> Flask:
    """An app on `database_url` with its own cache namespace, migrated."""
    settings = {"DATABASE_URL": database_url, "CACHE_KEY_PREFIX": f"test:{secrets.token_hex(4)}:", **overrides}
    app = create_app(settings, env={"APP_ENV": "testing"})
    migrate.upgrade(app.extensions["db"].engine)
    return app


@pytest.fixture(scope="session")
def pg_app(pg_url: str) -> Flask:
    return build_app(pg_url)


def _reset(app: Flask) -> None:
    app.extensions["shared_cache"].backend.clear()
    with app.app_context(), get_db().transaction() as conn:
        if get_db().dialect == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path: Any) -> Flask:
    """The app on each backend, with empty tables."""
    if request.param == "sqlite":
        application = build_app(f"sqlite:///{tmp_path}/test.db")
    else:
        application = request.getfixturevalue("pg_app")
    _reset(application)
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Api:
    """Small helpers over the test client so tests read as user stories."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def register(self, username: str, password: str = "password123", email: str | None = None) -> str:
        email = email or f"{username}@example.com"
        resp = self.client.post(
            "/api/users", json={"user": {"username": username, "email": email, "password": password}}
        )
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return str(resp.json["user"]["token"])  # type: ignore[index]

    def create_article(self, token: str, title: str = "A title", tags: list[str] | None = None, **fields: str) -> Any:
        article = {"title": title, "description": "d", "body": "b", "tagList": tags or [], **fields}
        resp = self.client.post("/api/articles", json={"article": article}, headers=auth(token))
        assert resp.status_code == 201, resp.get_data(as_text=True)
        return resp.json["article"]  # type: ignore[index]


@pytest.fixture
def api(client: FlaskClient) -> Api:
    return Api(client)


def auth(token: str, scheme: str = "Token") -> dict[str, str]:
    return {"Authorization": f"{scheme} {token}"}


@contextmanager
def count_statements(app: Flask) -> Iterator[list[str]]:
    """Record every SQL statement the app's engine sends while the block runs."""
    statements: list[str] = []
    engines = app.extensions["db"].engines

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis from REDIS_URL (default: local); skipped locally, failed in CI, when it is down."""
    import redis

    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        message = f"Redis at {url} is unavailable: {exc}"
        if _services_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url
