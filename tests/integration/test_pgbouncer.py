"""The service through PgBouncer 1.18 in transaction pooling mode (ops/pgbouncer/): it logs in,
its timeouts hold per transaction, nothing it sets leaks to the next client of a server
connection, and migrations go to DATABASE_DIRECT_URL."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from ops.pgbouncer import PgBouncer, PgBouncerError, PoolSettings, binary
from service import create_app
from service.storage import migrate
from tests.conftest import scratch_database, service_unavailable
from tests.live import ROOT, free_port

pytestmark = pytest.mark.postgres

FLASK = Path(sys.executable).parent / "flask"
POOL = 2  # server connections: few, so consecutive transactions share them


@pytest.fixture(scope="module")
def bouncer() -> Iterator[PgBouncer]:
    try:
        binary()
    except PgBouncerError as exc:
        service_unavailable("PgBouncer", str(exc))
    with scratch_database("conduit_pgb") as direct_url:
        folder = Path(tempfile.mkdtemp(prefix="conduit-pgb-"))
        running = PgBouncer(folder, direct_url, free_port(), PoolSettings(pool_size=POOL, max_client_conn=50))
        try:
            running.start()
            yield running
        finally:
            running.stop()  # before the database is dropped
            shutil.rmtree(folder, ignore_errors=True)


def app_through(bouncer: PgBouncer, **overrides: object) -> Flask:
    settings = {"DATABASE_URL": bouncer.url, "DATABASE_DIRECT_URL": bouncer.server_url, **overrides}
    return create_app(settings, env={"APP_ENV": "testing"})


@pytest.fixture(scope="module")
def app(bouncer: PgBouncer) -> Iterator[Flask]:
    application = app_through(bouncer, DB_STATEMENT_TIMEOUT_MS=300)
    migrate.upgrade(application.extensions["db"].engine)
    yield application
    application.extensions["db"].dispose()


def show(url: str, setting: str) -> str:
    """`SHOW setting` on a fresh plain client connection (through PgBouncer: any pooled server connection)."""
    conn = psycopg2.connect(url)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(f"SHOW {setting}")
            return str(cursor.fetchone()[0])
    finally:
        conn.close()


def test_the_service_logs_in_through_pgbouncer_and_answers(app: Flask) -> None:
    resp = app.test_client().post(
        "/api/users", json={"user": {"username": "pgb", "email": "pgb@example.com", "password": "password123"}}
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert app.test_client().get("/api/profiles/pgb").status_code == 200


@pytest.mark.parametrize("pool", ["read", "transaction"])
def test_the_statement_timeout_holds_through_pgbouncer_on_both_pools(app: Flask, pool: str) -> None:
    db = app.extensions["db"]
    for _ in range(2):  # the next transaction on the same pool gets it too
        with pytest.raises(OperationalError, match="statement timeout"), getattr(db, pool)() as conn:
            conn.execute(text("SELECT pg_sleep(1)"))


def test_a_write_transaction_keeps_its_timeout_after_the_first_statement(app: Flask) -> None:
    with pytest.raises(OperationalError, match="statement timeout"), app.extensions["db"].transaction() as conn:
        conn.execute(text("SELECT 1"))
        conn.execute(text("SELECT pg_sleep(1)"))


def test_no_setting_of_the_service_is_left_on_a_pooled_server_connection(app: Flask, bouncer: PgBouncer) -> None:
    db = app.extensions["db"]
    for _ in range(4 * POOL):  # more transactions than server connections: every one was used
        with db.read() as conn:
            assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "300ms"
        with db.transaction() as conn:
            assert conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one() == "10s"
    for _ in range(2 * POOL):
        assert show(bouncer.url, "statement_timeout") == "0"
        assert show(bouncer.url, "idle_in_transaction_session_timeout") == "0"


def test_migrations_use_the_direct_url(bouncer: PgBouncer, tmp_path: Path) -> None:
    """`flask db upgrade` goes to DATABASE_DIRECT_URL, so it also works when PgBouncer is down."""
    with scratch_database("conduit_pgb_direct") as direct_url:
        env = {
            **os.environ,
            "APP_ENV": "testing",
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere",
            "DATABASE_DIRECT_URL": direct_url,
        }
        out = subprocess.run(
            [str(FLASK), "--app", "service", "db", "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "applied 0001_initial" in out.stdout, out.stdout
        pending = subprocess.run(
            [str(FLASK), "--app", "service", "db", "pending"], env=env, cwd=ROOT, capture_output=True, text=True
        )
        assert (pending.returncode, pending.stdout) == (0, ""), pending
