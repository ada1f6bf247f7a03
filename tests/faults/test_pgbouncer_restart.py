"""PgBouncer (transaction pooling, ops/pgbouncer/) restarted under load, in front of the fault tests'
PostgreSQL: an immediate shutdown (SIGTERM closes every client connection), a second down, a start.

Pass, as for a PostgreSQL restart: while PgBouncer is down every answer is 2xx (a cached read) or a
fast 503 with Retry-After, never a hang; two seconds after it accepts connections again there are no
more errors; and every write acknowledged with a 2xx is in the database afterwards.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.pgbouncer import PgBouncer, PgBouncerError, PoolSettings, binary
from tests.conftest import service_unavailable
from tests.faults.conftest import create_database
from tests.faults.report import record
from tests.faults.servers import ThrowawayPostgres, ThrowawayRedis
from tests.faults.workload import CLEAN_AFTER_RECOVERY, MAX_LATENCY, ReadyProbe, mixed_load, outage_figures, verify
from tests.live import free_port, live_server

pytestmark = pytest.mark.faults

WARM_UP = 1.5
DOWNTIME = 1.0
AFTER = 1.5  # seconds of load checked for errors beyond CLEAN_AFTER_RECOVERY


@pytest.fixture(scope="module")
def bouncer(throwaway_pg: ThrowawayPostgres) -> Iterator[PgBouncer]:
    try:
        binary()
    except PgBouncerError as exc:
        service_unavailable("PgBouncer", str(exc))
    folder = Path(tempfile.mkdtemp(prefix="conduit-faults-pgb-"))
    running = PgBouncer(folder, create_database(throwaway_pg), free_port(), PoolSettings(pool_size=10))
    try:
        running.start()
        yield running
    finally:
        running.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def replica(bouncer: PgBouncer, throwaway_redis: ThrowawayRedis) -> Iterator[str]:
    """Two gevent workers whose DATABASE_URL is PgBouncer; migrations went straight to PostgreSQL."""
    env = {
        "DATABASE_DIRECT_URL": bouncer.server_url,
        "REDIS_URL": throwaway_redis.url,
        "CACHE_KEY_PREFIX": f"faults:pgb:{time.time_ns()}:",
    }
    with live_server(bouncer.url, workers=2, **env) as server:
        yield server


def test_a_pgbouncer_restart_gives_fast_503s_then_recovers_and_loses_no_acknowledged_write(
    bouncer: PgBouncer, replica: str
) -> None:
    load, writes = mixed_load(replica, secrets.token_hex(3))
    load.start()
    try:
        time.sleep(WARM_UP)
        with ReadyProbe(bouncer.url) as probe:
            down = time.monotonic()
            bouncer.stop()
            time.sleep(DOWNTIME)
            bouncer.start()
            up = probe.wait_up(timeout=10)
        time.sleep(max(0.0, up + CLEAN_AFTER_RECOVERY + AFTER - time.monotonic()))
    finally:
        load.stop()

    figures, late_errors, first_success = outage_figures(
        load.results, down, up, writes, verify(bouncer.server_url, writes)
    )
    figures["last_503_after_recovery_s"] = round(
        max((r.sent - up for r in load.results if r.status == 503), default=float("nan")), 3
    )
    statuses = {int(k): v for k, v in figures["statuses"].items()}
    record("pgbouncer_restart", figures)

    assert set(statuses) <= {200, 201, 503}, figures
    assert figures["503_without_retry_after"] == 0, figures
    assert figures["max_latency_s"] < MAX_LATENCY, figures
    assert not late_errors, f"{len(late_errors)} errors later than {CLEAN_AFTER_RECOVERY}s after recovery: {figures}"
    assert statuses.get(503, 0) > 0, "the restart was not seen by any request"
    assert first_success is not None and first_success < CLEAN_AFTER_RECOVERY, figures
    assert figures["writes_verified"] == figures["writes_acknowledged"], figures
