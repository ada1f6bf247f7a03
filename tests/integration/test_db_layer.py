"""The database layer under load and failure: cooperative psycopg2 under gevent,
connect and pool timeouts that answer 503 quickly, hashing off the hub, and
migrations run by several replicas at once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from service import create_app
from service.api.errors import messages
from service.storage import green, migrate
from tests.conftest import Api, build_app, scratch_database
from tests.live import ROOT, free_port

FLASK = Path(sys.executable).parent / "flask"
SLEEP_SECONDS = 0.2
SLEEPERS = 10


@pytest.fixture
def green_callback() -> Iterator[Callable[[float], None]]:
    """Install service.storage.green's wait callback on demand; always uninstall it afterwards."""
    yield green.install
    green.uninstall()


def unmigrated_app(database_url: str, **overrides: Any) -> Flask:
    """An app whose database is never touched at build time (it may not even exist)."""
    return create_app({"DATABASE_URL": database_url, **overrides}, env={"APP_ENV": "testing"})


def assert_unavailable(resp: Any) -> None:
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.json == {"errors": {"body": [messages.UNAVAILABLE]}}
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["Cache-Control"] == "no-store"


def touch_database(client: FlaskClient) -> Any:
    """A request that always reads the database first (a login is never served from a cache)."""
    return client.post("/api/users/login", json={"user": {"email": "nobody@example.com", "password": "whatever"}})


def assert_answered_by_database(resp: Any) -> None:
    assert resp.status_code == 401, resp.get_data(as_text=True)
    assert resp.json == {"errors": {"body": [messages.LOGIN_FAILED]}}


def sleep_in_greenlets(app: Flask) -> int:
    """How many of SLEEPERS greenlets' pg_sleep, each run through the app's Database, were running at
    one moment, by PostgreSQL's own clock: SLEEPERS when they overlap, 1 when they ran one by one."""
    db = app.extensions["db"]

    def sleeper() -> tuple[Any, Any]:
        with db.read() as conn:
            # FROM runs first: statement_timestamp() is when the query began, clock_timestamp() after the sleep.
            row = conn.execute(
                text(f"SELECT statement_timestamp(), clock_timestamp() FROM pg_sleep({SLEEP_SECONDS})")
            ).one()
            return row[0], row[1]

    # SQLAlchemy runs an engine's first connect under a threading lock. This
    # test process is not monkey-patched (gunicorn workers are), so a greenlet
    # waiting on that lock would block the whole thread: open every pooled connection first,
    # so that only the queries are left to overlap.
    with ExitStack() as stack:
        for _ in range(SLEEPERS):
            stack.enter_context(db.read())
    greenlets = [gevent.spawn(sleeper) for _ in range(SLEEPERS)]
    gevent.joinall(greenlets, raise_error=True)
    spans = [g.value for g in greenlets]
    return max(sum(1 for start, end in spans if start <= moment < end) for moment, _ in spans)


# --- cooperative psycopg2 -------------------------------------------------------


@pytest.mark.postgres
def test_queries_in_greenlets_overlap_when_the_green_callback_is_installed(
    pg_url: str, green_callback: Callable[[float], None]
) -> None:
    app = build_app(pg_url, DB_POOL_SIZE=SLEEPERS, DB_MAX_OVERFLOW=0)
    green_callback(app.config["DB_CONNECT_TIMEOUT"])
    try:
        running_at_once = sleep_in_greenlets(app)
    finally:
        app.extensions["db"].dispose()
    assert running_at_once == SLEEPERS, f"only {running_at_once} of {SLEEPERS} pg_sleep calls overlapped"


@pytest.mark.postgres
def test_without_the_green_callback_the_same_queries_run_one_after_another(pg_url: str) -> None:
    green.uninstall()
    app = build_app(pg_url, DB_POOL_SIZE=SLEEPERS, DB_MAX_OVERFLOW=0)
    try:
        running_at_once = sleep_in_greenlets(app)
    finally:
        app.extensions["db"].dispose()
    assert running_at_once == 1, f"{running_at_once} pg_sleep calls overlapped: the greenlets were not serialized"


# --- failures answer 503 quickly --------------------------------------------------


@contextmanager
def silent_listener() -> Iterator[tuple[int, list[socket.socket]]]:
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.05)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        server.close()


def test_a_database_that_accepts_but_never_answers_gives_503_after_the_connect_timeout(
    green_callback: Callable[[float], None], caplog: pytest.LogCaptureFixture
) -> None:
    with silent_listener() as (port, accepted):
        app = unmigrated_app(f"postgresql://postgres@127.0.0.1:{port}/conduit", DB_CONNECT_TIMEOUT=0.5)
        green_callback(app.config["DB_CONNECT_TIMEOUT"])
        start = time.monotonic()
        resp = touch_database(app.test_client())
        elapsed = time.monotonic() - start
        assert accepted, "libpq never reached the listener: the timeout path was not exercised"
        app.extensions["db"].dispose()
    assert_unavailable(resp)
    assert elapsed < 5, f"took {elapsed:.2f}s with DB_CONNECT_TIMEOUT=0.5"
    # The deadline came from service.storage.green's callback (libpq ignores connect_timeout in async mode).
    causes = [str(r.exc_info[1]) for r in caplog.records if r.exc_info and r.exc_info[1] is not None]
    assert any("timed out after 0.5s connecting" in cause for cause in causes), causes


@pytest.mark.parametrize("cooperative", [False, True], ids=["blocking", "green"])
def test_an_unreachable_database_gives_503_with_retry_after(
    cooperative: bool, green_callback: Callable[[float], None]
) -> None:
    app = unmigrated_app(f"postgresql://postgres@127.0.0.1:{free_port()}/conduit", DB_CONNECT_TIMEOUT=0.5)
    if cooperative:
        green_callback(app.config["DB_CONNECT_TIMEOUT"])
    start = time.monotonic()
    resp = touch_database(app.test_client())
    elapsed = time.monotonic() - start
    assert_unavailable(resp)
    assert elapsed < 5


@pytest.mark.postgres
def test_an_exhausted_pool_gives_a_fast_503_and_recovers_when_a_connection_is_freed(pg_url: str) -> None:
    app = build_app(pg_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=0.2)
    client = app.test_client()
    try:
        with app.extensions["db"].read() as held:
            held.execute(text("SELECT 1"))
            start = time.monotonic()
            resp = touch_database(client)
            elapsed = time.monotonic() - start
        assert_unavailable(resp)
        assert elapsed < 2, f"waited {elapsed:.2f}s for a connection with DB_POOL_TIMEOUT=0.2"
        assert_answered_by_database(touch_database(client))
    finally:
        app.extensions["db"].dispose()


@pytest.mark.postgres
def test_a_request_in_a_greenlet_also_gets_503_while_another_greenlet_holds_the_only_connection(
    pg_url: str, green_callback: Callable[[float], None]
) -> None:
    app = build_app(pg_url, DB_POOL_SIZE=1, DB_MAX_OVERFLOW=0, DB_POOL_TIMEOUT=0.2)
    green_callback(app.config["DB_CONNECT_TIMEOUT"])

    def hold() -> None:
        with app.extensions["db"].read() as conn:
            conn.execute(text("SELECT pg_sleep(1)"))

    try:
        holder = gevent.spawn(hold)
        gevent.sleep(0.3)  # the holder is now inside pg_sleep, yielding to the hub
        assert not holder.dead
        start = time.monotonic()
        resp = gevent.spawn(touch_database, app.test_client()).get(timeout=10)
        elapsed = time.monotonic() - start
        holder.get(timeout=10)
        assert_unavailable(resp)
        assert elapsed < 2
    finally:
        app.extensions["db"].dispose()


# --- password hashing --------------------------------------------------------------


class SpyHasher:
    """Records the OS thread of each hash/verify, then runs the real argon2 hasher."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.threads: dict[str, list[int]] = {"hash": [], "verify": []}

    def hash(self, password: str) -> str:
        self.threads["hash"].append(threading.get_ident())
        return str(self.real.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        self.threads["verify"].append(threading.get_ident())
        return bool(self.real.verify(password_hash, password))


def test_password_hashing_runs_off_the_hubs_thread(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    passwords = app.extensions["passwords"]
    spy = SpyHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", spy)
    hub_thread = gevent.get_hub().thread_ident
    assert hub_thread == threading.get_ident()

    Api(client).register("hasher", password="correct horse")
    login = client.post("/api/users/login", json={"user": {"email": "hasher@example.com", "password": "correct horse"}})

    assert login.status_code == 200, login.get_data(as_text=True)
    assert len(spy.threads["hash"]) == 1
    assert len(spy.threads["verify"]) == 1
    for ident in spy.threads["hash"] + spy.threads["verify"]:
        assert ident != hub_thread


# --- migrations -------------------------------------------------------------------


def upgrade_concurrently(database_url: str, replicas: int = 4) -> list[tuple[int, str, str]]:
    """Run `flask db upgrade` in `replicas` processes at once; (exit code, stdout, stderr) each."""
    env = {**os.environ, "DATABASE_URL": database_url, "APP_ENV": "testing"}
    procs = [
        subprocess.Popen(
            [str(FLASK), "--app", "service", "db", "upgrade"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(replicas)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    return results


def assert_applied_once(database_url: str, dialect: str, results: list[tuple[int, str, str]]) -> None:
    assert [code for code, _, _ in results] == [0] * len(results), results
    versions = [m.version for m in migrate.available(dialect)]
    assert versions
    # Exactly one replica applied the migrations; the others found them done.
    appliers = [out for _, out, _ in results if "applied" in out]
    assert len(appliers) == 1, results
    assert all(v in appliers[0] for v in versions)
    assert sum("up to date" in out for _, out, _ in results) == len(results) - 1, results
    url = make_url(database_url)
    engine = create_engine(url.set(drivername="postgresql+psycopg2") if dialect == "postgresql" else url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version, COUNT(*) FROM schema_migrations GROUP BY version")).all()
        assert {version: count for version, count in rows} == dict.fromkeys(versions, 1)
        assert {"users", "articles", "favorites", "comments", "follows", "article_tags"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_replicas_migrating_a_fresh_postgresql_database_at_once_apply_each_version_exactly_once() -> None:
    with scratch_database("conduit_migrate") as url:
        assert_applied_once(url, "postgresql", upgrade_concurrently(url))


def test_replicas_migrating_a_fresh_sqlite_file_at_once_apply_each_version_exactly_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/replicas.db"
    assert_applied_once(url, "sqlite", upgrade_concurrently(url))


# Statements a splitter must not cut: a semicolon ending a line inside a string literal, after a trailing
# comment, and inside a body (a PL/pgSQL $$ function, a SQLite trigger).
TRICKY_MIGRATIONS = {
    "postgresql": """-- A comment; with a semicolon
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL); -- trailing;
INSERT INTO notes (id, body) VALUES (1, 'one;
two');
CREATE FUNCTION note_count() RETURNS BIGINT AS $$
BEGIN
    RETURN (SELECT COUNT(*) FROM notes);
END;
$$ LANGUAGE plpgsql;
""",
    "sqlite": """-- A comment; with a semicolon
CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL); -- trailing;
INSERT INTO notes (id, body) VALUES (1, 'one;
two');
CREATE TABLE note_log (note_id INTEGER NOT NULL);
CREATE TRIGGER notes_logged AFTER INSERT ON notes BEGIN
    INSERT INTO note_log (note_id) VALUES (new.id);
END;
-- A last comment; nothing after it
""",
}
TRICKY_CHECKS = {
    "postgresql": "SELECT body, note_count() FROM notes",
    "sqlite": "SELECT body, (SELECT COUNT(*) FROM note_log) FROM notes",
}


def apply_tricky_migration(database_url: str, dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "migrations" / dialect).mkdir(parents=True)
    (tmp_path / "migrations" / dialect / "0001_tricky.sql").write_text(TRICKY_MIGRATIONS[dialect])
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path / "migrations")
    engine = unmigrated_app(database_url).extensions["db"].engine
    assert migrate.upgrade(engine) == ["0001_tricky"]
    with engine.connect() as conn:
        assert conn.execute(text(TRICKY_CHECKS[dialect])).all() == [("one;\ntwo", 1 if dialect == "postgresql" else 0)]
    assert migrate.pending(engine) == []
    assert migrate.upgrade(engine) == []


@pytest.mark.postgres
def test_a_postgresql_migration_with_semicolons_in_literals_comments_and_bodies_applies_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scratch_database("conduit_split") as url:
        apply_tricky_migration(url, "postgresql", tmp_path, monkeypatch)


def test_a_sqlite_migration_with_semicolons_in_literals_comments_and_triggers_applies_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_tricky_migration(f"sqlite:///{tmp_path}/tricky.db", "sqlite", tmp_path, monkeypatch)


@pytest.mark.postgres
def test_a_runner_killed_while_holding_the_migration_lock_does_not_block_the_next_start() -> None:
    """The lock is a transaction-scoped advisory lock: the server drops it with the dead session.
    (A lock kept as a row in a table would stay behind and refuse every later start.)"""
    holder = (
        "import os, signal, sys\n"
        "from sqlalchemy import create_engine\n"
        "from service.storage import migrate\n"
        "conn = create_engine(sys.argv[1]).connect()\n"
        "conn.begin()\n"
        "conn.execute(migrate.TAKE_PG_LOCK, {'lock_id': migrate.LOCK_ID})\n"
        "print('locked', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    with scratch_database("conduit_killed") as url:
        psycopg2_url = make_url(url).set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
        proc = subprocess.run(
            [sys.executable, "-c", holder, psycopg2_url], cwd=ROOT, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == -9 and proc.stdout == "locked\n", proc
        results = upgrade_concurrently(url, replicas=1)
        assert [code for code, _, _ in results] == [0], results
        assert "applied 0001_initial" in results[0][1], results


@pytest.mark.postgres
def test_a_replica_waits_for_the_migration_lock_longer_than_the_statement_timeout() -> None:
    """DB_STATEMENT_TIMEOUT_MS bounds requests, not a start waiting for another replica's migrations."""
    with scratch_database("conduit_lockwait") as url:
        holder = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
        engine = unmigrated_app(url, DB_STATEMENT_TIMEOUT_MS=200).extensions["db"].engine
        try:
            with holder.connect() as conn:
                conn.begin()
                conn.execute(migrate.TAKE_PG_LOCK, {"lock_id": migrate.LOCK_ID})
                release = threading.Timer(1.0, conn.rollback)
                release.start()
                started = time.monotonic()
                try:
                    assert migrate.upgrade(engine)[0] == "0001_initial"
                finally:
                    release.join()
                assert time.monotonic() - started >= 1.0
        finally:
            engine.dispose()
            holder.dispose()


@pytest.mark.postgres
def test_a_migration_statement_may_run_longer_than_the_statement_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "postgresql").mkdir()
    (tmp_path / "postgresql" / "0001_slow.sql").write_text("SELECT pg_sleep(0.5);\n")
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path)
    with scratch_database("conduit_slow") as url:
        engine = unmigrated_app(url, DB_STATEMENT_TIMEOUT_MS=200).extensions["db"].engine
        try:
            assert migrate.upgrade(engine) == ["0001_slow"]
        finally:
            engine.dispose()


def test_db_pending_lists_what_is_not_applied_and_exits_1_until_upgrade(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/pending.db", "APP_ENV": "testing"}

    def flask_db(command: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FLASK), "--app", "service", "db", command], env=env, cwd=ROOT, capture_output=True, text=True
        )

    versions = [m.version for m in migrate.available("sqlite")]
    before = flask_db("pending")
    assert (before.returncode, before.stdout.split()) == (1, versions), before
    assert flask_db("upgrade").returncode == 0
    after = flask_db("pending")
    assert (after.returncode, after.stdout) == (0, ""), after
