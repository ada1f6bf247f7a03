"""F6/F7: PostgreSQL restarted (fast) or crashed (immediate stop, then start) under load.

Pass: during the outage every answer is 2xx (a cached read) or a fast 503
with Retry-After, never a hang; two seconds after PostgreSQL accepts
connections again there are no more errors; and every write acknowledged
with a 2xx is in the database afterwards (synchronous_commit=on).
"""

from __future__ import annotations

import secrets
import time

import pytest

from tests.faults.conftest import Replicas
from tests.faults.report import record
from tests.faults.servers import ThrowawayPostgres
from tests.faults.workload import CLEAN_AFTER_RECOVERY, MAX_LATENCY, ReadyProbe, mixed_load, outage_figures, verify

pytestmark = pytest.mark.faults

WARM_UP = 1.5
CRASH_DOWNTIME = 1.5
AFTER = 1.5  # seconds of load checked for errors beyond CLEAN_AFTER_RECOVERY


@pytest.mark.parametrize("fault", ["restart-fast", "crash-immediate"])
def test_postgres_outage_gives_fast_503s_then_recovers_and_loses_no_acknowledged_write(
    fault: str, replicas: Replicas, pg: ThrowawayPostgres
) -> None:
    load, writes = mixed_load(replicas.replica1, secrets.token_hex(3))
    load.start()
    try:
        time.sleep(WARM_UP)
        with ReadyProbe(pg.admin_url) as probe:
            down = time.monotonic()
            if fault == "restart-fast":
                pg.restart("fast")
            else:
                pg.stop("immediate")
                time.sleep(CRASH_DOWNTIME)
                pg.start()
            up = probe.wait_up(timeout=10)
        time.sleep(max(0.0, up + CLEAN_AFTER_RECOVERY + AFTER - time.monotonic()))
    finally:
        load.stop()

    figures, late_errors, first_success = outage_figures(
        load.results, down, up, writes, verify(replicas.database_url, writes)
    )
    statuses = {int(k): v for k, v in figures["statuses"].items()}
    record(f"postgres_{fault}", figures)

    assert set(statuses) <= {200, 201, 503}, figures
    assert figures["503_without_retry_after"] == 0, figures
    assert figures["max_latency_s"] < MAX_LATENCY, figures
    assert not late_errors, f"{len(late_errors)} errors later than {CLEAN_AFTER_RECOVERY}s after recovery: {figures}"
    assert statuses.get(503, 0) > 0, "the outage was not seen by any request"
    assert first_success is not None and first_success < CLEAN_AFTER_RECOVERY, figures
    assert figures["writes_verified"] == figures["writes_acknowledged"], figures
