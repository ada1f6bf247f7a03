"""Fixtures shared by every test layer, and the report of what did not run.

PostgreSQL comes from TEST_DATABASE_URL or DATABASE_URL (default: the local
server). Each test session creates its own database and drops it at the end.
Redis comes from REDIS_URL (default: the local server, database 0); a test
session uses its own key prefix there and deletes only its own keys.
When a service is unreachable its tests are skipped locally, and the run ends
with a NOT RUN block naming it; under CI (CI=true) or REQUIRE_SERVICES=1 they
fail instead: a missing service is never a silent pass there.
"""

from __future__ import annotations

import os
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import make_url

from service import create_app
from service.storage import migrate
from service.storage.db import get_db

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
TABLES = (
    "comments",
    "favorites",
    "article_tags",
    "articles",
    "follows",
    "users",
    "idempotency_keys",
    "article_counts",
    "tag_counts",
)


def _services_required() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true") or os.environ.get("REQUIRE_SERVICES") == "1"


def service_unavailable(service: str, message: str) -> NoReturn:
    """Skip the test locally, fail it under CI or REQUIRE_SERVICES=1: `service` is missing.

    The reason is tagged with the service, so the NOT RUN summary can group skips by it.
    """
    reason = f"[needs {service}] {message}"
    if _services_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


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
        service_unavailable(
            "PostgreSQL", f"PostgreSQL at {make_url(_admin_url()).render_as_string()} is unavailable: {exc}"
        )
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


@pytest.fixture(scope="session")
def pg_redis_app(pg_url: str, redis_url: str) -> Iterator[Flask]:
    """PostgreSQL with the Redis cache, as in production, under a key prefix of this session alone."""
    prefix = f"test:{os.getpid()}:{secrets.token_hex(4)}:"
    app = build_app(pg_url, REDIS_URL=redis_url, CACHE_TYPE="RedisCache", CACHE_KEY_PREFIX=prefix)
    try:
        yield app
    finally:
        forget_keys(redis_url, prefix)


def forget_keys(url: str, prefix: str) -> int:
    """Delete the keys under `prefix` in the Redis of `url` (SCAN + DEL, never FLUSHDB); how many."""
    if not prefix or any(c in prefix for c in "*?[]\\"):
        raise ValueError(f"refusing to delete by the pattern {prefix!r}*")
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += int(client.delete(*batch))
                batch = []
        if batch:
            deleted += int(client.delete(*batch))
    finally:
        client.close()
    return deleted


def _reset(app: Flask) -> None:
    if app.config["CACHE_TYPE"] == "RedisCache":
        forget_keys(app.config["REDIS_URL"], app.config["CACHE_KEY_PREFIX"])
    else:
        app.extensions["shared_cache"].backend.clear()
    with app.app_context(), get_db().transaction() as conn:
        if get_db().dialect == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(TABLES) + " RESTART IDENTITY CASCADE"))
        else:
            for table in TABLES:
                conn.execute(text(f"DELETE FROM {table}"))


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-redis"])
def app(request: pytest.FixtureRequest, tmp_path: Any) -> Flask:
    """The app on each stack, with empty tables and an empty cache: SQLite and PostgreSQL with the
    in-process cache, and PostgreSQL with the Redis cache (what production runs)."""
    if request.param == "sqlite":
        application = build_app(f"sqlite:///{tmp_path}/test.db")
    elif request.param == "postgresql":
        application = request.getfixturevalue("pg_app")
    else:
        application = request.getfixturevalue("pg_redis_app")
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
    url = os.environ.get("REDIS_URL") or DEFAULT_REDIS
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", f"Redis at {url} is unavailable: {exc}")
    finally:
        client.close()
    return url


# --- what did not run -------------------------------------------------------------------------------

NEEDS = re.compile(r"\[needs ([^\]]+)\]")
SKIPPED: list[pytest.TestReport] = []  # of this run


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        SKIPPED.append(report)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _not_run_lines(skipped: list[pytest.TestReport]) -> list[str]:
    """One line per missing service (how many tests it cost), with one reason as an example."""
    by_service: Counter[str] = Counter()
    example: dict[str, str] = {}
    for report in skipped:
        reason = _skip_reason(report)
        found = NEEDS.search(reason)
        service = found.group(1) if found else ""
        by_service[service] += 1
        example.setdefault(service, NEEDS.sub("", reason).strip())
    lines = []
    for service, count in by_service.most_common():
        tests = f"{count} test{'s' if count != 1 else ''}"
        if service:
            lines.append(
                f"NOT RUN: {tests} skipped because {service} is unavailable"
                " - install or start it, or see docs/development.md, section Tests"
            )
        else:
            lines.append(f"NOT RUN: {tests} skipped for other reasons")
        lines.append(f"    e.g. {example[service]}")
    return lines


def pytest_unconfigure(config: pytest.Config) -> None:
    """After pytest's last line: a block nobody can miss when tests did not run."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if not SKIPPED or reporter is None:
        return
    reporter.write_sep("!", f"NOT RUN: {len(SKIPPED)} of the selected tests", red=True, bold=True)
    for line in _not_run_lines(SKIPPED):
        reporter.write_line(line, red=True, bold=not line.startswith(" "))
    if _services_required():
        reporter.write_line("CI=true / REQUIRE_SERVICES=1: these skips fail this run.", red=True, bold=True)
    else:
        reporter.write_line(
            "Those layers were NOT tested. Under CI=true or REQUIRE_SERVICES=1 a skip is a failure.", red=True
        )
    reporter.write_sep("!", red=True, bold=True)
    SKIPPED.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI a skipped test fails the run, whichever fixture let it skip."""
    if _services_required() and SKIPPED and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
