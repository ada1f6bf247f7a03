"""Past one database's max_connections: 8 replicas x 2 workers at the default pools through PgBouncer.

A throwaway PostgreSQL with max_connections 100; PgBouncer in transaction mode in front of it with a
pool of 40; 16 workers whose pools may open up to 10 + 5 + 2 x 5 = 25 connections each (400 in all,
far past 100), behind HAProxy, started by ops/cluster.py as `make cluster` does. The mixed workload
runs with no failed request, and PostgreSQL never sees more client backends than PgBouncer's pool,
sampled every 50 ms during the load. Figures in var/pgbouncer-figures.json.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

from ops.cluster import Cluster
from ops.inventory import ROOT
from tests.cluster.conftest import (
    count_titles,
    make_world,
    require_haproxy,
    require_pgbouncer,
    running_cluster,
)
from tests.cluster.mix import Mix
from tests.conftest import service_unavailable
from tests.faults.servers import ThrowawayPostgres, missing_binaries
from tests.loadgen import Load

REPLICAS, WORKERS = 8, 2
MAX_CONNECTIONS = 100
POOL = 40
CLIENTS = 64
LOAD_SECONDS = 15
FIGURES = ROOT / "var" / "pgbouncer-figures.json"
ENV = {
    "APP_ENV": "testing",
    "ACCESS_LOG": "",
    "SHUTDOWN_DELAY": "0",
    "GRACEFUL_TIMEOUT": "10",
    # Default DB_POOL_SIZE / DB_WRITE_POOL_SIZE / DB_MAX_OVERFLOW: nothing shrinks them here.
    # Modest concurrency per worker: 16 workers share 2 cores with PostgreSQL, PgBouncer and the load.
    "WORKER_CONNECTIONS": "25",
    "LB_SERVER_MAXCONN": "16",
    "LB_RATE_LIMIT": "100",
}


@pytest.fixture(scope="module")
def postgres() -> Iterator[ThrowawayPostgres]:
    missing = [m for m in missing_binaries() if "redis" not in m]
    if missing:
        service_unavailable("PostgreSQL server binaries", "; ".join(missing))
    server = ThrowawayPostgres(max_connections=MAX_CONNECTIONS)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def big_cluster(postgres: ThrowawayPostgres, redis_url: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    require_haproxy()
    require_pgbouncer()
    env = {**ENV, "DATABASE_URL": postgres.url("conduit"), "REDIS_URL": redis_url}
    with running_cluster(
        "cluster-pgb", env, request, REPLICAS, stop_timeout=20, workers=WORKERS, timeout=180, pgbouncer_pool=POOL
    ) as running:
        yield running


class Sampler:
    """Every 50 ms: PostgreSQL's client backends on the database, and PgBouncer's client connections."""

    def __init__(self, postgres: ThrowawayPostgres, bouncer_port: int) -> None:
        self.postgres, self.bouncer_port = postgres, bouncer_port
        self.server: list[int] = []
        self.clients: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        pg = psycopg2.connect(self.postgres.admin_url)
        admin = psycopg2.connect(host="127.0.0.1", port=self.bouncer_port, user="postgres", dbname="pgbouncer")
        pg.autocommit = admin.autocommit = True
        try:
            while not self._stop.is_set():
                with pg.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = %s",
                        ("conduit",),
                    )
                    self.server.append(int(cursor.fetchone()[0]))
                with admin.cursor() as cursor:
                    cursor.execute("SHOW POOLS")
                    names = [column.name for column in cursor.description]
                    rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
                    self.clients.append(
                        sum(int(r["cl_active"]) + int(r["cl_waiting"]) for r in rows if r["database"] == "conduit")
                    )
                self._stop.wait(0.05)
        finally:
            pg.close()
            admin.close()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def test_sixteen_workers_at_default_pools_share_forty_postgresql_connections_without_an_error(
    big_cluster: Cluster, postgres: ThrowawayPostgres
) -> None:
    world = make_world(big_cluster.state["api"])
    tag = f"pgb-{secrets.token_hex(3)}"
    mix = Mix(world, tag)
    pool = big_cluster.state["pgbouncer"]["pool_size"]
    assert pool == POOL
    with Sampler(postgres, big_cluster.state["pgbouncer"]["port"]) as sampler:
        with Load(big_cluster.state["api"], mix, clients=CLIENTS, seed=7) as load:
            time.sleep(LOAD_SECONDS)
        time.sleep(0.2)
    report = load.report
    figures: dict[str, Any] = {
        "workers": REPLICAS * WORKERS,
        "client_connections_allowed": REPLICAS * WORKERS * (10 + 5 + 2 * 5),
        "postgres_max_connections": MAX_CONNECTIONS,
        "pgbouncer_pool": pool,
        "max_postgres_connections_seen": max(sampler.server),
        "max_pgbouncer_clients_seen": max(sampler.clients),
        "samples": len(sampler.server),
        "requests": len(report.outcomes),
        "failed": len(report.failed()),
        "requests_per_s": round(len(report.outcomes) / report.duration, 1),
        "keyed_creates_acknowledged": mix.created(),
    }
    print(f"\n{report.summary()}\n" + "\n".join(f"  {k}: {v}" for k, v in figures.items()))
    FIGURES.write_text(json.dumps(figures, indent=2) + "\n")

    assert report.crashes == [], report.crashes[:5]
    assert report.failed() == [], report.summary()
    assert len(report.outcomes) > 200, figures
    assert figures["max_postgres_connections_seen"] <= pool, figures
    assert figures["max_pgbouncer_clients_seen"] > pool, f"no more clients than server connections: {figures}"
    assert count_titles(big_cluster, tag) == mix.created() > 0
