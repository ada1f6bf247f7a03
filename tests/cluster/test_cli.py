"""`python -m ops.cluster` (what `make cluster` / `make cluster-stop` run) leaves nothing behind and
touches nothing it did not start."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import procs
from ops.inventory import ROOT
from tests.cluster.conftest import CLUSTER_ENV, distinct_free_ports, require_haproxy, require_pgbouncer, wait_for
from tests.conftest import scratch_database, service_unavailable
from tests.faults.servers import ThrowawayPostgres, missing_binaries
from tests.loadgen import Client


@pytest.fixture
def state_dir() -> Iterator[Path]:
    path = ROOT / "var" / f"cluster-cli-{secrets.token_hex(3)}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cli(state: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "ops.cluster", "--state-dir", str(state), *args]
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_start_then_stop_leaves_no_process_behind(state_dir: Path, redis_url: str) -> None:
    require_haproxy()
    require_pgbouncer()
    lb, stats, first, bouncer = distinct_free_ports(4)
    with scratch_database("conduit_cli") as database_url:
        env = {
            **os.environ,
            **CLUSTER_ENV,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": f"test:cli:{secrets.token_hex(4)}:",
            "SHUTDOWN_DELAY": "0",
        }
        started = cli(state_dir, "start", "--replicas", "1", "--workers", "1", "--port", str(lb),
                      "--stats-port", str(stats), "--first-port", str(first), "--pgbouncer-port", str(bouncer),
                      env=env)  # fmt: skip
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            assert f"http://127.0.0.1:{lb}/api" in started.stdout and "make cluster-stop" in started.stdout
            recorded = json.loads((state_dir / "state.json").read_text())["processes"]
            groups = [procs.Process(p["pid"], p["started"]) for p in recorded.values()]
            assert sorted(recorded) == ["app1", "haproxy", "pgbouncer"]
            # HAProxy master + worker, gunicorn master + worker: each group has both; PgBouncer is one process
            assert all(len(procs.group_members(procs.Process(**recorded[n]).pid)) >= 2 for n in ("app1", "haproxy"))
            assert len(procs.group_members(recorded["pgbouncer"]["pid"])) == 1

            stopped = cli(state_dir, "stop")
            assert stopped.returncode == 0, stopped.stderr
            assert all(procs.group_members(g.pid) == [] for g in groups)
            assert (state_dir / "haproxy.sock").exists() is False
            assert cli(state_dir, "stop").stdout.strip() == "nothing was running"
        finally:
            cli(state_dir, "stop")  # a failed assertion above must not leave the cluster running


def test_stop_never_signals_a_process_whose_pid_was_reused(state_dir: Path) -> None:
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        stat = procs._stat(bystander.pid)
        assert stat is not None
        state_dir.mkdir(parents=True)
        # The state of a cluster that died; its recorded pid now belongs to someone else (other start time).
        record = {"pid": bystander.pid, "started": stat[2] - 1}
        (state_dir / "state.json").write_text(json.dumps({"processes": {"app1": record}}))
        assert cli(state_dir, "stop").stdout.strip() == "nothing was running"
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_start_with_a_standby_reads_from_it_then_stop_removes_it(state_dir: Path, redis_url: str) -> None:
    """`make cluster STANDBY=1` on a primary of its own (the shared one need not allow replication)."""
    require_haproxy()
    require_pgbouncer()
    if missing := missing_binaries():
        service_unavailable("PostgreSQL server binaries", ", ".join(missing))
    primary = ThrowawayPostgres(max_connections=60)
    try:
        primary.init()
        hba = primary.data / "pg_hba.conf"
        allowed = hba.read_text()
        hba.write_text("".join(line for line in allowed.splitlines(True) if "replication" not in line))
        primary.start()
        lb, stats, first, bouncer, standby_port = distinct_free_ports(5)
        env = {
            **os.environ,
            **CLUSTER_ENV,
            "DATABASE_URL": primary.url("conduit"),
            "REDIS_URL": redis_url,
            "CACHE_KEY_PREFIX": f"test:standby:{secrets.token_hex(4)}:",
            "SHUTDOWN_DELAY": "0",
        }
        args = ("start", "--replicas", "1", "--workers", "1", "--port", str(lb), "--stats-port", str(stats),
                "--first-port", str(first), "--pgbouncer-port", str(bouncer), "--standby",
                "--standby-port", str(standby_port))  # fmt: skip

        refused = cli(state_dir, *args, env=env)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "refuses replication connections" in refused.stderr and "host replication postgres" in refused.stderr
        assert not (state_dir / "standby").exists()

        hba.write_text(allowed)
        primary.pg_ctl("reload")
        started = cli(state_dir, *args, env=env)
        try:
            assert started.returncode == 0, started.stdout + started.stderr
            assert f"127.0.0.1:{standby_port}/conduit" in started.stdout, started.stdout
            recorded = json.loads((state_dir / "state.json").read_text())["processes"]
            assert sorted(recorded) == ["app1", "haproxy", "pgbouncer", "standby"]
            groups = [procs.Process(p["pid"], p["started"]) for p in recorded.values()]

            client = Client(f"http://127.0.0.1:{lb}")
            user = {"username": "stand", "email": "stand@example.com", "password": "password123"}
            token = client.request("POST", "/api/users", json={"user": user}).json()["user"]["token"]
            article = {"title": "Through the standby", "description": "d", "body": "b", "tagList": []}
            resp = client.request("POST", "/api/articles", json={"article": article}, token=token)
            assert resp.status == 201, resp.body
            slug = resp.json()["article"]["slug"]
            # read-your-writes: at once, whether the standby replayed the commit yet or not
            mine = client.request("GET", f"/api/articles/{slug}", token=token)
            assert mine.status == 200 and mine.json()["article"]["title"] == "Through the standby"
            wait_for(lambda: client.request("GET", f"/api/articles/{slug}").status == 200, timeout=10, interval=0.1)

            ready = Client(f"http://127.0.0.1:{first}").request("GET", "/readyz").json()
            assert [r["state"] for r in ready["replicas"]] == ["ok"], ready
            metrics = Client(f"http://127.0.0.1:{first}").request("GET", "/metrics").body.decode()
            served = [
                line for line in metrics.splitlines() if line.startswith('conduit_db_reads_total{database="replica0"')
            ]
            assert served and float(served[0].split()[-1]) > 0, metrics
            # a rolling restart keeps the replicas reading from the standby (its URL is in state.json)
            restarted = cli(state_dir, "rolling-restart")
            assert restarted.returncode == 0, restarted.stdout + restarted.stderr
            assert client.request("GET", f"/api/articles/{slug}").status == 200
            ready = Client(f"http://127.0.0.1:{first}").request("GET", "/readyz").json()
            assert [r["state"] for r in ready["replicas"]] == ["ok"], ready
            client.close()
            shown = cli(state_dir, "status")
            assert f"standby pid {recorded['standby']['pid']} on 127.0.0.1:{standby_port}" in shown.stdout, shown

            stopped = cli(state_dir, "stop")
            assert stopped.returncode == 0, stopped.stderr
            assert "standby" in stopped.stdout
            assert all(procs.group_members(g.pid) == [] for g in groups)
            assert not (state_dir / "standby").exists()
        finally:
            cli(state_dir, "stop")
    finally:
        primary.destroy()
