"""Replicas behind HAProxy for the cluster tests, started by ops/cluster.py (the code `make cluster` runs).

One cluster for this package: 3 replicas x 1 gunicorn worker (the machine has 2 cores) on a scratch
PostgreSQL database (through PgBouncer, as `make cluster` runs them) and the shared Redis under a
unique key prefix, HAProxy on free ports. Its own traffic is exempt from HAProxy's per-address limit
by configuration only (LB_RATE_EXEMPT_FILE), while the limit itself is kept low. Every test leaves
all replicas UP and ready.
"""

from __future__ import annotations

import secrets
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from ops import procs
from ops.cluster import Cluster
from ops.inventory import BACKEND, ROOT, ClusterError, haproxy_binary
from ops.lbadmin import Admin, AdminError
from ops.pgbouncer import PgBouncerError
from ops.pgbouncer import binary as pgbouncer_binary
from tests.conftest import scratch_database, service_unavailable
from tests.live import free_port
from tests.loadgen import Client

REPLICAS = 3
# Replica settings: a small database pool each, at most 7 connections per replica (the shared
# PostgreSQL has max_connections 100 and other test runs use it too: "too many clients" would fail
# requests), and no more requests in flight per replica than that pool, so excess load queues in
# HAProxy instead. SHUTDOWN_DELAY 1 s keeps the rolling restart short.
CLUSTER_ENV = {
    "APP_ENV": "testing",
    "ACCESS_LOG": "-",
    "SHUTDOWN_DELAY": "1",
    "GRACEFUL_TIMEOUT": "10",
    "DB_POOL_SIZE": "3",
    "DB_WRITE_POOL_SIZE": "2",
    "DB_MAX_OVERFLOW": "1",
    "LB_SERVER_MAXCONN": "6",
    "LB_RATE_LIMIT": "100",
}


# The replicas reach the scratch database through PgBouncer (as with `make cluster`), which opens at
# most this many PostgreSQL connections for their up to 3 x 7.
PGBOUNCER_POOL = 10


def require_haproxy() -> str:
    try:
        return haproxy_binary()
    except ClusterError as exc:
        service_unavailable("HAProxy", str(exc))


def require_pgbouncer() -> str:
    try:
        return pgbouncer_binary()
    except PgBouncerError as exc:
        service_unavailable("PgBouncer", str(exc))


def distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return list(ports)


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Seconds until `condition()` held; AssertionError after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


@contextmanager
def running_cluster(
    label: str,
    env: dict[str, str],
    request: pytest.FixtureRequest,
    replicas: int,
    *,
    stop_timeout: float,
    **start: Any,
) -> Iterator[Cluster]:
    """A cluster of `replicas` replicas through PgBouncer, its state under var/<label>-<hex>: stopped at
    the end, its state removed unless a test failed (the logs are in it). `env` gets the key prefix
    and the rate-limit exemption of the load generator; `start` goes to `Cluster.start`."""
    # Short path: a unix socket path is limited to 107 bytes.
    state = ROOT / "var" / f"{label}-{secrets.token_hex(3)}"
    state.mkdir(parents=True)
    exempt = state / "rate-limit-exempt.txt"
    exempt.write_text("127.0.0.1\n::1\n")
    env = {**env, "CACHE_KEY_PREFIX": f"test:{label}:{secrets.token_hex(4)}:", "LB_RATE_EXEMPT_FILE": str(exempt)}
    lb_port, stats_port, bouncer_port, *replica_ports = distinct_free_ports(3 + replicas)
    running = Cluster(state, log=lambda _line: None)
    try:
        running.start(
            replicas,
            port=lb_port,
            stats_port=stats_port,
            replica_ports=replica_ports,
            env=env,
            pgbouncer_port=bouncer_port,
            **start,
        )
        yield running
    finally:
        running.stop(timeout=stop_timeout)
        if request.session.testsfailed == 0:
            shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="package")
def cluster(redis_url: str, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    require_haproxy()
    require_pgbouncer()
    with scratch_database("conduit_cluster") as database_url:
        env = {**CLUSTER_ENV, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
        with running_cluster(
            "cluster-test", env, request, REPLICAS, stop_timeout=15, workers=1, pgbouncer_pool=PGBOUNCER_POOL
        ) as running:
            yield running


@dataclass
class World:
    """Users with tokens and their articles, created through HAProxy before the load starts."""

    users: list[tuple[str, str]] = field(default_factory=list)  # (username, token)
    articles: dict[str, list[str]] = field(default_factory=dict)  # username -> slugs


@pytest.fixture(scope="package")
def world(cluster: Cluster) -> World:
    return make_world(cluster.state["api"])


def make_world(api: str) -> World:
    """Six users with three articles each, created through `api`."""
    client, world = Client(api), World()
    for i in range(6):
        name = f"user{i}_{secrets.token_hex(3)}"
        user = {"username": name, "email": f"{name}@example.com", "password": "password123"}
        resp = client.request("POST", "/api/users", json={"user": user})
        assert resp.status == 201, resp.body
        token = resp.json()["user"]["token"]
        world.users.append((name, token))
        for j in range(3):
            article = {"title": f"seed {name} {j}", "description": "d", "body": "b", "tagList": [f"t{j}"]}
            resp = client.request("POST", "/api/articles", json={"article": article}, token=token)
            assert resp.status == 201, resp.body
            world.articles.setdefault(name, []).append(resp.json()["article"]["slug"])
    client.close()
    return world


@contextmanager
def database(cluster: Cluster) -> Iterator[Any]:
    engine = create_engine(cluster.state["env"]["DATABASE_URL"].replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def duplicate_titles(cluster: Cluster, prefix: str) -> list[tuple[str, int]]:
    """Titles starting with `prefix` that exist more than once (a replayed create that created twice)."""
    with database(cluster) as conn:
        rows = conn.execute(
            text("SELECT title, count(*) FROM articles WHERE title LIKE :p GROUP BY title HAVING count(*) > 1"),
            {"p": prefix + "%"},
        )
        return [(r[0], r[1]) for r in rows]


def count_titles(cluster: Cluster, prefix: str) -> int:
    with database(cluster) as conn:
        return int(
            conn.execute(text("SELECT count(*) FROM articles WHERE title LIKE :p"), {"p": prefix + "%"}).scalar_one()
        )


def backend_counters(admin: Admin) -> dict[str, int]:
    row = admin.stats(BACKEND)["BACKEND"]
    return {k: int(row[k] or 0) for k in ("stot", "wretr", "wredis", "econ", "eresp", "hrsp_5xx")}


@contextmanager
def extra_haproxy(cluster: Cluster, **env: str) -> Iterator[tuple[str, Admin]]:
    """A second HAProxy in front of the same replicas (same haproxy.cfg and servers file), other knobs."""
    port, stats_port = distinct_free_ports(2)
    sock = cluster.dir / f"lb-{port}.sock"
    environ = {
        **cluster.state["env"],
        "LB_BIND": f"127.0.0.1:{port}",
        "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
        "LB_ADMIN_SOCKET": str(sock),
        **env,
    }
    argv = [haproxy_binary(), "-db", "-f", str(ROOT / "haproxy.cfg"), "-f", str(cluster.inventory)]
    proc = procs.spawn(argv, environ, ROOT, cluster.dir / f"haproxy-{port}.log")
    admin = Admin(sock)
    try:

        def all_up() -> bool:
            try:
                return all(s.up for s in admin.servers(BACKEND).values()) and len(admin.servers(BACKEND)) == REPLICAS
            except AdminError:
                return False

        wait_for(all_up, timeout=15, interval=0.05)
        yield f"http://127.0.0.1:{port}", admin
    finally:
        procs.stop(proc, timeout=5)


def new_key() -> str:
    return str(uuid.uuid4())
