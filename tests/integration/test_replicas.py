"""Read replicas (DATABASE_REPLICA_URLS) against a real streaming replica that lags on purpose.

A throwaway primary and a standby made from it with `pg_basebackup -R`, each on its own port;
`recovery_min_apply_delay` on the standby holds every commit back for a while. Two apps on the same
primary, replica and Redis namespace stand for two service replicas.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest
from flask import Flask

from service import create_app
from service.runtime import metrics
from service.storage import migrate
from tests.conftest import auth, forget_keys, service_unavailable
from tests.faults.servers import ThrowawayPostgres, missing_binaries

pytestmark = pytest.mark.postgres

DELAY = 2.0  # seconds the standby holds each commit back while lagging


@dataclass
class Cluster:
    primary: ThrowawayPostgres
    standby: ThrowawayPostgres

    def url(self, server: ThrowawayPostgres) -> str:
        return server.url("conduit")

    def set_delay(self, seconds: float) -> None:
        with open(self.standby.data / "postgresql.conf", "a") as conf:
            conf.write(f"recovery_min_apply_delay = '{int(seconds * 1000)}ms'\n")
        self.standby.pg_ctl("reload")
        time.sleep(0.2)  # the startup process rereads its configuration on SIGHUP

    def caught_up(self, seconds: float = 10) -> None:
        """Wait until the standby replayed everything the primary wrote so far."""
        target = query(self.url(self.primary), "SELECT pg_current_wal_insert_lsn()::text")
        deadline = time.monotonic() + seconds
        while query(self.url(self.standby), f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn") is not True:
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)


def query(url: str, sql: str) -> Any:
    conn = psycopg2.connect(url, connect_timeout=2)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone()[0] if cursor.description else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    missing = [m for m in missing_binaries() if "redis" not in m]
    if missing:
        service_unavailable("PostgreSQL server binaries", "; ".join(missing))
    primary, standby = ThrowawayPostgres(max_connections=100), ThrowawayPostgres(max_connections=100)
    try:
        primary.init()
        with open(primary.data / "postgresql.conf", "a") as conf:
            conf.write("wal_level = replica\nmax_wal_senders = 4\nfsync = off\nsynchronous_commit = off\n")
        primary.start()
        query(primary.admin_url, "CREATE DATABASE conduit")
        # -R: standby.signal and primary_conninfo; the copied postgresql.conf gets its own port below.
        primary_dsn = f"host=127.0.0.1 port={primary.port} user=postgres"
        standby._run("pg_basebackup", "-d", primary_dsn, "-D", str(standby.data), "-R", "-X", "stream", "-c", "fast")
        with open(standby.data / "postgresql.conf", "a") as conf:
            conf.write(f"port = {standby.port}\nunix_socket_directories = '{standby.root}'\nhot_standby = on\n")
        standby.start()
        yield Cluster(primary, standby)
    finally:
        standby.destroy()
        primary.destroy()


@pytest.fixture(scope="module")
def prefix(redis_url: str) -> Iterator[str]:
    value = f"test:replicas:{secrets.token_hex(4)}:"
    yield value
    forget_keys(redis_url, value)


def service(cluster: Cluster, redis_url: str, prefix: str, **overrides: Any) -> Flask:
    settings = {
        "DATABASE_URL": cluster.url(cluster.primary),
        "DATABASE_REPLICA_URLS": cluster.url(cluster.standby),
        "DATABASE_REPLICA_MAX_LAG": 30.0,
        "REDIS_URL": redis_url,
        "CACHE_TYPE": "RedisCache",
        "CACHE_KEY_PREFIX": prefix,
        **overrides,
    }
    return create_app(settings, env={"APP_ENV": "testing"})


@pytest.fixture(scope="module")
def apps(cluster: Cluster, redis_url: str, prefix: str) -> Iterator[tuple[Flask, Flask]]:
    first = service(cluster, redis_url, prefix)
    migrate.upgrade(first.extensions["db"].engine)
    second = service(cluster, redis_url, prefix)
    cluster.caught_up()
    yield first, second
    for app in (first, second):
        app.extensions["db"].dispose()


def reads(database: str) -> float:
    return float(metrics.DB_READS.labels(database)._value.get())


def register(app: Flask, name: str) -> str:
    resp = app.test_client().post(
        "/api/users", json={"user": {"username": name, "email": f"{name}@example.com", "password": "password123"}}
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return str(resp.json["user"]["token"])  # type: ignore[index]


def test_a_writer_reads_its_own_writes_through_another_service_replica(
    cluster: Cluster, apps: tuple[Flask, Flask]
) -> None:
    writer_app, reader_app = apps
    token = register(writer_app, "ryw")
    cluster.caught_up()
    before = reads("replica0")
    assert reader_app.test_client().get("/api/tags").status_code == 200  # nobody's writes: the replica
    assert reads("replica0") == before + 1
    cluster.set_delay(DELAY)
    try:
        stale, replica_behind = 0, 0
        for i in range(4):
            bio = f"bio {i}"
            resp = writer_app.test_client().put("/api/user", json={"user": {"bio": bio}}, headers=auth(token))
            assert resp.status_code == 200, resp.get_data(as_text=True)
            # The replica itself still has the old row: a read there would be stale.
            if query(cluster.url(cluster.standby), "SELECT bio FROM users WHERE username = 'ryw'") != bio:
                replica_behind += 1
            for path in ("/api/user", "/api/profiles/ryw"):
                got = reader_app.test_client().get(path, headers=auth(token))
                assert got.status_code == 200, got.get_data(as_text=True)
                body = got.json["user" if path == "/api/user" else "profile"]  # type: ignore[index]
                stale += body["bio"] != bio
        assert stale == 0
        assert replica_behind == 4, "the replica was never behind: the test proves nothing"
    finally:
        cluster.set_delay(0)
    cluster.caught_up()
    # Once the replica replayed the writes, the writer's reads use it again.
    before = reads("replica0")
    assert reader_app.test_client().get("/api/user", headers=auth(token)).status_code == 200
    assert reads("replica0") > before


def test_the_shared_cache_is_never_filled_from_a_lagging_replica(cluster: Cluster, apps: tuple[Flask, Flask]) -> None:
    writer_app, reader_app = apps
    token = register(writer_app, "filler")
    resp = writer_app.test_client().post(
        "/api/articles",
        json={"article": {"title": "Fill", "description": "d", "body": "old body", "tagList": []}},
        headers=auth(token),
    )
    assert resp.status_code == 201, resp.get_data(as_text=True)
    slug = resp.json["article"]["slug"]  # type: ignore[index]
    cluster.caught_up()
    anonymous = reader_app.test_client()
    assert anonymous.get(f"/api/articles/{slug}").json["article"]["body"] == "old body"  # type: ignore[index]
    cluster.set_delay(DELAY)
    try:
        resp = writer_app.test_client().put(
            f"/api/articles/{slug}", json={"article": {"body": "new body"}}, headers=auth(token)
        )
        assert resp.status_code == 200, resp.get_data(as_text=True)
        on_replica = query(cluster.url(cluster.standby), f"SELECT body FROM articles WHERE slug = '{slug}'")
        assert on_replica == "old body", "the replica was not behind: the test proves nothing"
        # An anonymous reader (no writes of its own) takes the new generation and misses.
        before = reads("primary")
        filled = anonymous.get(f"/api/articles/{slug}")
        assert filled.json["article"]["body"] == "new body"  # type: ignore[index]
        assert reads("primary") > before  # filled from the primary, the replica being below the floor
    finally:
        cluster.set_delay(0)
    cluster.caught_up()
    # The entry stored during the lag is what every reader now gets from the cache.
    cache = reader_app.extensions["shared_cache"]
    hits = cache.stats["hits"]
    for app in apps:
        assert app.test_client().get(f"/api/articles/{slug}").json["article"]["body"] == "new body"  # type: ignore[index]
    assert reader_app.extensions["shared_cache"].stats["hits"] == hits + 1


def test_a_replica_past_the_lag_limit_is_skipped_and_reported(
    cluster: Cluster, apps: tuple[Flask, Flask], redis_url: str, prefix: str
) -> None:
    strict = service(cluster, redis_url, prefix, DATABASE_REPLICA_MAX_LAG=0.5, CACHE_TYPE="NullCache")
    writer_app = apps[0]
    token = register(writer_app, "lagger")
    cluster.caught_up()
    try:
        ready = strict.test_client().get("/readyz").json
        assert ready["replicas"] == [{"replica": 0, "state": "ok", "lag_seconds": 0.0}], ready
        cluster.set_delay(DELAY)
        for i in range(3):  # commits held back: the last replayed one grows old
            writer_app.test_client().put("/api/user", json={"user": {"bio": f"b{i}"}}, headers=auth(token))
            time.sleep(0.4)
        ready = strict.test_client().get("/readyz").json
        assert ready["status"] == "ready"
        (state,) = ready["replicas"]
        assert state["state"] == "lagging" and state["lag_seconds"] > 0.5, ready
        before = reads("primary"), reads("replica0")
        assert strict.test_client().get("/api/tags").status_code == 200
        assert (reads("primary"), reads("replica0")) == (before[0] + 1, before[1])
    finally:
        cluster.set_delay(0)
        strict.extensions["db"].dispose()
    cluster.caught_up()


def test_a_replica_killed_under_load_fails_no_read(cluster: Cluster, redis_url: str, prefix: str) -> None:
    """Last in the module: the standby stays down."""
    app = service(cluster, redis_url, prefix, CACHE_TYPE="NullCache")
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        client = app.test_client()
        while not stop.is_set():
            statuses.append(client.get("/api/articles?limit=5").status_code)

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        before = reads("replica0")
        for worker in workers:
            worker.start()
        time.sleep(0.8)
        on_replica = reads("replica0") - before
        cluster.standby.stop("immediate")
        after_kill = len(statuses)
        time.sleep(1.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        app.extensions["db"].dispose()
    assert on_replica > 0
    assert len(statuses) > after_kill + 10, "no load after the kill"
    failed = [s for s in statuses if s != 200]
    assert failed == [], f"{len(failed)} of {len(statuses)} reads failed: {sorted(set(failed))}"
