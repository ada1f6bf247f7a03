"""Fixtures for fault tests: throwaway PostgreSQL and Redis servers of their own.

Fault tests stop, crash and freeze these; the machine's shared servers are
never touched. A missing binary skips the tests locally and fails them under
CI (CI=true) or REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import service_unavailable
from tests.faults.servers import ThrowawayPostgres, ThrowawayRedis, missing_binaries
from tests.live import live_server


def _require_binaries() -> None:
    missing = missing_binaries()
    if missing:
        service_unavailable("PostgreSQL and Redis server binaries", "fault tests need " + "; ".join(missing))


@pytest.fixture(scope="session")
def throwaway_pg() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL cluster of the fault tests alone; running when each test starts."""
    _require_binaries()
    server = ThrowawayPostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def throwaway_redis() -> Iterator[ThrowawayRedis]:
    """A Redis of the fault tests alone; running (and not frozen) when each test starts."""
    _require_binaries()
    server = ThrowawayRedis()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg(throwaway_pg: ThrowawayPostgres) -> Iterator[ThrowawayPostgres]:
    """The throwaway PostgreSQL, started again after the test if the test left it down."""
    yield throwaway_pg
    if not throwaway_pg.running():
        throwaway_pg.start()


@pytest.fixture
def redis_server(throwaway_redis: ThrowawayRedis) -> Iterator[ThrowawayRedis]:
    """The throwaway Redis, thawed or started again after the test if the test left it down."""
    yield throwaway_redis
    if throwaway_redis.frozen:
        throwaway_redis.thaw()
    if throwaway_redis.proc is None or throwaway_redis.proc.poll() is not None:
        throwaway_redis.start()


@dataclass
class Replicas:
    """Two gunicorn replicas on one database and one Redis (one key prefix), as in production."""

    database_url: str
    replica1: str  # two gevent workers: the one under load
    replica2: str  # one gevent worker: a replica that may sit idle through a fault


def create_database(server: ThrowawayPostgres) -> str:
    """A fresh database in the throwaway cluster; its URL (the cluster is deleted at the end)."""
    name = f"faults_{secrets.token_hex(4)}"
    admin = create_engine(server.admin_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return server.url(name)


@pytest.fixture(scope="session")
def replicas(throwaway_pg: ThrowawayPostgres, throwaway_redis: ThrowawayRedis) -> Iterator[Replicas]:
    """Both replicas, started together (a gunicorn takes seconds to boot on a busy box).

    Shared by the fault tests: each test makes its own users and articles, and
    every test leaves PostgreSQL and Redis running again (fixtures `pg`, `redis_server`).
    """
    url = create_database(throwaway_pg)
    env = {"REDIS_URL": throwaway_redis.url, "CACHE_KEY_PREFIX": f"faults:{time.time_ns()}:"}
    with ExitStack() as stack, ThreadPoolExecutor(2) as pool:
        starts = [pool.submit(stack.enter_context, live_server(url, workers=n, **env)) for n in (2, 1)]
        replica1, replica2 = (start.result(timeout=120) for start in starts)
        yield Replicas(url, replica1, replica2)
