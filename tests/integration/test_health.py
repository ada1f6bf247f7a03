"""Liveness, readiness and graceful shutdown.

In-process tests cover what each endpoint reports on both backends; the
shutdown test runs a real gunicorn on PostgreSQL: SIGTERM with a request held
in flight by a row lock, a lame-duck period, then the drain.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.runtime import lifecycle
from service.storage import green
from tests.conftest import build_app, count_statements, scratch_database
from tests.live import ROOT, free_port, live_server


@pytest.fixture
def draining() -> Iterator[None]:
    lifecycle.begin_draining()
    try:
        yield
    finally:
        lifecycle.reset()


def test_healthz_answers_ok_without_touching_the_database(app: Flask, client: FlaskClient) -> None:
    with count_statements(app) as statements:
        resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.data == b"ok\n"
    assert resp.headers["Cache-Control"] == "no-store"
    assert "ETag" not in resp.headers
    assert statements == []


def test_readyz_reports_every_part_and_is_not_cached(app: Flask, client: FlaskClient) -> None:
    resp = client.get("/readyz")
    assert resp.status_code == 200
    redis = "ok" if app.config["REDIS_URL"] else "not configured"
    assert resp.get_json() == {"status": "ready", "database": "ok", "migrations": "ok", "redis": redis}
    assert resp.headers["Cache-Control"] == "no-store"
    assert "ETag" not in resp.headers


@pytest.mark.usefixtures("draining")
def test_both_checks_answer_503_while_draining_and_readiness_skips_the_database(
    app: Flask, client: FlaskClient
) -> None:
    with count_statements(app) as statements:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.status_code == 503
    assert health.get_json() == {"errors": {"body": ["draining"]}}
    assert health.headers["Cache-Control"] == "no-store"
    assert ready.status_code == 503
    assert ready.get_json()["status"] == "draining"
    assert ready.headers["Cache-Control"] == "no-store"
    assert statements == []


def test_readyz_is_503_until_the_migrations_are_applied(tmp_path: Path) -> None:
    from service import create_app
    from service.storage import migrate

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/fresh.db"}, env={"APP_ENV": "testing"})
    client = app.test_client()
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json() == {
        "status": "not ready",
        "database": "ok",
        "migrations": "pending",
        "redis": "not configured",
    }
    migrate.upgrade(app.extensions["db"].engine)
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_when_the_database_is_unreachable() -> None:
    from service import create_app

    closed = free_port()
    app = create_app(
        {"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{closed}/nothing", "DB_CONNECT_TIMEOUT": 1},
        env={"APP_ENV": "testing"},
    )
    started = time.monotonic()
    resp = app.test_client().get("/readyz")
    assert time.monotonic() - started < 5
    assert resp.status_code == 503
    assert resp.get_json() == {
        "status": "not ready",
        "database": "down",
        "migrations": "unknown",
        "redis": "not configured",
    }
    # Liveness does not care.
    assert app.test_client().get("/healthz").status_code == 200


@contextmanager
def blackhole() -> Iterator[int]:
    """A port whose kernel completes the TCP handshake but nobody ever answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


def test_readyz_gives_up_after_readiness_timeout_on_a_database_that_never_answers() -> None:
    from service import create_app

    with blackhole() as port:
        app = create_app(
            {
                "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/nothing",
                "DB_CONNECT_TIMEOUT": 30,
                "READINESS_TIMEOUT": 0.5,
            },
            env={"APP_ENV": "testing"},
        )
        green.install(30)  # as in a gevent worker: libpq waits cooperatively, so the timeout can fire
        try:
            started = time.monotonic()
            resp = app.test_client().get("/readyz")
            elapsed = time.monotonic() - started
        finally:
            green.uninstall()
    assert resp.status_code == 503
    assert resp.get_json()["database"] == "timeout"
    assert 0.4 < elapsed < 2.5


def test_redis_is_reported_but_never_makes_the_replica_unready(tmp_path: Path, redis_url: str) -> None:
    down = build_app(f"sqlite:///{tmp_path}/down.db", REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    resp = down.test_client().get("/readyz")
    assert resp.status_code == 200
    assert resp.get_json()["redis"] == "down"
    up = build_app(f"sqlite:///{tmp_path}/up.db", REDIS_URL=redis_url)
    assert up.test_client().get("/readyz").get_json()["redis"] == "ok"


def test_the_checks_are_documented_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert {"200", "503"} <= set(paths["/healthz"]["get"]["responses"])
    ready = paths["/readyz"]["get"]["responses"]
    assert (
        ready["200"]["content"]["application/json"]["schema"] == ready["503"]["content"]["application/json"]["schema"]
    )
    assert "operators only" in paths["/metrics"]["get"]["summary"]


def test_a_shutdown_delay_longer_than_the_graceful_timeout_is_refused() -> None:
    env = {**os.environ, "SHUTDOWN_DELAY": "30", "GRACEFUL_TIMEOUT": "25"}
    result = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('gunicorn.conf.py')"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0
    assert "SHUTDOWN_DELAY=30 must be between 0 and GRACEFUL_TIMEOUT-2" in result.stderr


# -- graceful shutdown on a live server ----------------------------------------------------------

DELAY = 2.0
GRACEFUL = 30


def _call(base: str, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any, Any]:
    request = urllib.request.Request(
        base + path, method=method, data=None if body is None else json.dumps(body).encode()
    )
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def _fresh_get(base: str, path: str) -> tuple[int, bytes]:
    """GET on a new connection; ConnectionRefusedError once nothing listens."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _workers(server: Any) -> set[int]:
    pid = server.proc.pid
    return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


@pytest.mark.postgres
def test_a_reload_replaces_the_workers_without_a_lame_duck(pg_url: str) -> None:
    """HUP makes the master replace every worker with SIGTERM; the replica itself stays: never 503."""
    with live_server(pg_url, workers=2, SHUTDOWN_DELAY="6") as server:
        old = _workers(server)
        reload = time.monotonic()
        server.proc.send_signal(signal.SIGHUP)
        statuses = []
        while not old.isdisjoint(_workers(server)):
            # Well before SHUTDOWN_DELAY would have let the old workers go.
            assert time.monotonic() - reload < 6, "the old workers served a lame duck"
            statuses.append(_fresh_get(server, "/healthz")[0])
            time.sleep(0.05)
        assert len(_workers(server)) == 2
        assert set(statuses) == {200}, statuses
        assert _fresh_get(server, "/readyz")[0] == 200
        # After a reload, a stop of the replica still has its lame duck (the reloaded config
        # reaches the shared flag): covered by SIGTERM here, the drain test covers the rest.
        term = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        while _fresh_get(server, "/healthz")[0] != 503:
            assert time.monotonic() - term < 5, "no lame duck after a reload"
            time.sleep(0.05)


@pytest.mark.postgres
def test_sigterm_drains_a_replica_without_failing_a_request_in_flight() -> None:
    with (
        scratch_database("conduit_drain") as url,
        live_server(
            url,
            workers=2,
            SHUTDOWN_DELAY=str(DELAY),
            GRACEFUL_TIMEOUT=str(GRACEFUL),
            DB_STATEMENT_TIMEOUT_MS="60000",  # the held request waits on a row lock, not a timeout
        ) as server,
    ):
        user = {"username": "drain", "email": "drain@example.com", "password": "password123"}
        status, body, _ = _call(server, "POST", "/api/users", {"user": user})
        assert status == 201
        token = json.loads(body)["user"]["token"]
        article = {"title": "Held", "description": "d", "body": "b"}
        status, body, _ = _call(server, "POST", "/api/articles", {"article": article}, token)
        assert status == 201
        slug = json.loads(body)["article"]["slug"]

        # An idle keep-alive client: it must not keep the worker alive until the graceful timeout.
        host, port = server.removeprefix("http://").split(":")
        idle = http.client.HTTPConnection(host, int(port), timeout=10)
        idle.request("GET", "/healthz")
        assert idle.getresponse().read() == b"ok\n"

        # Hold a PUT in flight: the test's transaction locks the article's row.
        locker = psycopg2.connect(url)
        watcher = psycopg2.connect(url)
        watcher.autocommit = True
        result: dict[str, Any] = {}
        try:
            with locker.cursor() as cur:
                cur.execute("SELECT id FROM articles WHERE slug = %s FOR UPDATE", (slug,))

            def put() -> None:
                result["reply"] = _call(server, "PUT", f"/api/articles/{slug}", {"article": {"body": "new"}}, token)
                result["at"] = time.monotonic()

            in_flight = threading.Thread(target=put)
            in_flight.start()
            deadline = time.monotonic() + 10
            with watcher.cursor() as cur:
                while True:
                    cur.execute(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                    if cur.fetchone()[0] == 1:  # type: ignore[index]
                        break
                    assert time.monotonic() < deadline, "the PUT never reached the row lock"
                    time.sleep(0.05)

            term = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)

            # Lame duck: still accepting and serving, but the checks say 503.
            first_503 = None
            while first_503 is None:
                status, body = _fresh_get(server, "/healthz")
                if status == 503:
                    first_503 = time.monotonic() - term
                    assert json.loads(body) == {"errors": {"body": ["draining"]}}
                assert time.monotonic() - term < DELAY, "healthz never turned 503 during the delay"
                time.sleep(0.05)
            status, body = _fresh_get(server, "/readyz")
            assert (status, json.loads(body)["status"]) == (503, "draining")
            assert _fresh_get(server, "/api/tags")[0] == 200

            # After the delay, new connections are refused while the PUT is still held.
            while True:
                try:
                    _fresh_get(server, "/healthz")
                except ConnectionRefusedError:
                    refused = time.monotonic() - term
                    break
                assert time.monotonic() - term < DELAY + 5, "the listener was never closed"
                time.sleep(0.05)
            assert refused >= DELAY - 0.1
            assert in_flight.is_alive() and server.proc.poll() is None

            # The idle keep-alive connection was closed by the server (EOF), not left to time out.
            assert idle.sock is not None
            idle.sock.settimeout(5)
            assert idle.sock.recv(1) == b""

            released = time.monotonic()
            locker.rollback()
            in_flight.join(timeout=15)
            assert not in_flight.is_alive()
            status, body, headers = result["reply"]
            assert status == 200, body
            assert json.loads(body)["article"]["body"] == "new"
            assert headers["Connection"] == "close"

            exit_code = server.proc.wait(timeout=GRACEFUL)
            exited = time.monotonic()
        finally:
            locker.close()
            watcher.close()
            idle.close()

    assert exit_code == 0
    # As soon as the last request is answered (plus the workers' interpreter exit), not at the graceful timeout.
    assert exited - released < 10
    assert exited - term < GRACEFUL
    log = server.log_path.read_text()
    assert "graceful timeout" not in log
    print(f"\n503 after {first_503:.2f}s, refused after {refused:.2f}s, exit {exited - released:.2f}s after release")
