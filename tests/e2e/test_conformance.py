"""The public RealWorld conformance suite (Postman collection, run by newman) against a live
gunicorn + gevent server, on two stacks: what production runs (a fresh PostgreSQL database, the
Redis cache, two workers) and the embedded default a newcomer gets from `make run` (SQLite, the
in-process cache, one worker)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.conftest import scratch_database
from tests.live import Server, live_server, server_stack

HERE = Path(__file__).resolve().parent
NEWMAN = HERE / "node_modules" / ".bin" / "newman"


@pytest.fixture(params=["postgresql-redis-2-workers", "sqlite-1-worker"])
def base(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A live server on one stack; the environment's REDIS_URL or CACHE_TYPE never picks it."""
    with ExitStack() as resources:
        if request.param == "sqlite-1-worker":
            url = f"sqlite:///{tmp_path}/conduit.db"
            env = {"REDIS_URL": "", "CACHE_TYPE": "SimpleCache"}
            expected = ("not configured", 1)
        else:
            redis_url = request.getfixturevalue("redis_url")
            url = resources.enter_context(scratch_database("conduit_e2e"))
            env = {"REDIS_URL": redis_url, "CACHE_TYPE": "RedisCache"}
            expected = ("ok", 2)
        server = resources.enter_context(live_server(url, workers=expected[1], **env))
        assert server_stack(server) == expected
        yield server


def test_postman_collection_passes_every_assertion(base: Server, tmp_path: Path) -> None:
    assert NEWMAN.exists(), "newman is not installed: run `make test` (it runs `npm ci` in tests/e2e)"
    user = f"e2e{int(time.time() * 1000)}"
    report = tmp_path / "newman.json"
    result = subprocess.run(
        [
            str(NEWMAN),
            "run",
            str(HERE / "realworld" / "Conduit.postman_collection.json"),
            "--global-var",
            f"APIURL={base}/api",
            "--global-var",
            f"USERNAME={user}",
            "--global-var",
            f"EMAIL={user}@mail.com",
            "--global-var",
            "PASSWORD=password",
            "--reporters",
            "cli,json",
            "--reporter-json-export",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    stats = json.loads(report.read_text())["run"]["stats"]
    failures = json.loads(report.read_text())["run"]["failures"]
    assert failures == [], result.stdout[-5000:]
    assert stats["assertions"]["failed"] == 0
    assert stats["requests"]["failed"] == 0
    # The collection has 311 assertions; a much smaller number means requests were skipped.
    assert stats["assertions"]["total"] >= 300, stats
    assert result.returncode == 0, result.stdout[-5000:]
