"""One short real sweep of `python -m bench.tune`: PostgreSQL, Redis, gunicorn and wrk.

wrk is installed by `make test` (the `wrk` target), never by a test: without it this is a NOT RUN
locally and a failure in CI.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from tests.conftest import _admin_url, service_unavailable

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def wrk() -> str:
    """wrk on PATH; the tuner would otherwise try to apt-get it."""
    found = shutil.which("wrk")
    if found is None:
        service_unavailable("wrk", "wrk is not installed: `make wrk` (apt-get install -y wrk)")
    return found


@pytest.mark.postgres
def test_a_real_sweep_rejects_too_few_worker_connections_and_cleans_up(
    tmp_path: Path, pg_url: str, redis_url: str, wrk: str
) -> None:
    """1 worker with 4 greenlets under 8 keep-alive clients: 4 are never served, and the probe sees it."""
    cmd = [sys.executable, "-m", "bench.tune", "--scenario", "tags"]
    cmd += ["--workers", "1", "--connections", "4,50", "--clients", "8", "--duration", "6", "--warmup", "0"]
    cmd += ["--timeout", "2", "--dataset-scale", "0.05", "--out", str(tmp_path)]
    cmd += ["--database-url", _admin_url(), "--redis-url", redis_url]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0, output[-3000:]

    saved = json.loads((tmp_path / "tune.json").read_text())
    starved, roomy = saved["trials"]
    assert starved["pool"] == {"reads": 3, "writes": 1, "overflow": 0}
    assert starved["probe_failures"] > 0, output[-3000:]
    assert roomy["probe_failures"] == 0 and roomy["requests"] > 0
    assert saved["recommendation"]["WORKER_CONNECTIONS"] == "50"
    assert "Recommendation: 1w x 50" in output
    assert (tmp_path / "tune.png").read_bytes().startswith(b"\x89PNG")

    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.connect() as conn:
        left = conn.execute(
            text("SELECT datname FROM pg_database WHERE datname = :n"), {"n": f"conduit_bench_{proc.pid}"}
        )
        assert left.first() is None
    engine.dispose()
    assert not list(redis.Redis.from_url(redis_url).scan_iter(match=f"conduit:tune:{proc.pid}:*"))
