"""The measuring half of `python -m bench.tune`: budget from PostgreSQL, the sweep, the plot.

Reuses the benchmark harness (bench/stores.py, dataset.py, servers.py, scenarios.py) for the database,
seeding, gunicorn and wrk; the rule that picks a setting and the table live in bench/tuning_rules.py,
the command in bench/tune.py.
"""

from __future__ import annotations

import http.client
import os
import tempfile
import textwrap
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from sqlalchemy import create_engine, text

from bench.common import BenchError, Settings, log
from bench.dataset import seed, write_data_files
from bench.report import machine_info
from bench.scenarios import Runner, ensure_wrk
from bench.servers import Server, migrate, service_env
from bench.stores import RedisStats, bench_database, own_keys
from bench.tuning_rules import Budget, Trial


def read_budget(admin_url: str, replicas: int, headroom: int, max_connections: int | None) -> tuple[Budget, int]:
    """The budget from the server's settings, and how many client connections it has right now."""
    engine = create_engine(admin_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            names = ("max_connections", "superuser_reserved_connections", "reserved_connections")
            rows = conn.execute(
                text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"), {"names": list(names)}
            )
            settings = {name: int(value) for name, value in rows}
            in_use = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"))
            busy = int(in_use.scalar() or 0)
    except Exception as exc:
        raise click.ClickException(f"PostgreSQL at {admin_url} is unavailable: {exc}") from exc
    finally:
        engine.dispose()
    reserved = settings.get("superuser_reserved_connections", 3) + settings.get("reserved_connections", 0)
    total = max_connections or settings["max_connections"]
    return Budget(total, reserved, headroom, replicas), busy


def measure(opts: dict[str, Any], trials: list[Trial]) -> dict[str, Any]:
    """Seed a fresh database once, then serve and load it with each trial's settings."""
    wrk = ensure_wrk()
    out: Path = opts["out"]
    out.mkdir(parents=True, exist_ok=True)
    redis_stats = RedisStats(opts["redis_url"])
    prefix = f"conduit:tune:{os.getpid()}:"  # own namespace: nothing to flush, removed at start and end
    settings = Settings(
        duration=opts["duration"],
        scenarios=[opts["scenario"]],
        connections=[opts["clients"]],
        workers=max(t.workers for t in trials),
        threads=max(1, (os.cpu_count() or 1) // 4),
        timeout=opts["timeout"],
        warmup=opts["warmup"],
        nullcache=False,
        admin_url=opts["database_url"],
        redis_url=opts["redis_url"],
        out=out,
    )
    with ExitStack() as stack:
        stack.callback(redis_stats.close)
        stack.enter_context(own_keys(redis_stats, prefix))
        db_url = stack.enter_context(bench_database(settings.admin_url))
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conduit-tune-")))
        base_env = service_env(db_url, settings.redis_url, 1) | {"CACHE_KEY_PREFIX": prefix}
        migrate(base_env)
        with Server("tune-seed", base_env, out) as server:
            dataset = seed(server.base_url, opts["dataset_scale"])
        write_data_files(dataset, data_dir)
        runner = Runner(settings, wrk, data_dir)
        runner.total_runs = sum(t.pool is not None for t in trials)
        for trial in (t for t in trials if t.pool is not None):
            label = f"tune-w{trial.workers}-c{trial.worker_connections}"
            try:
                with (
                    Server(label, base_env | trial.env(), out) as server,
                    Probe(server.port, settings.timeout) as probe,
                ):
                    runner.scenario(server, trial.name, opts["scenario"])
            except BenchError as exc:
                first, log_path = str(exc).splitlines()[0], out / f"gunicorn-{label}.log"
                trial.error = first if str(log_path) in first else f"{first} (log {log_path})"
                log(f"    {trial.name}: {trial.error}")
                continue
            r = runner.results[-1]
            trial.rps, trial.p50_ms, trial.p99_ms, trial.requests = r.rps, r.p50_ms, r.p99_ms, r.requests
            trial.non2xx, trial.statuses, trial.socket_errors = r.non2xx, r.statuses, r.socket_errors
            trial.probes, trial.probe_failures, trial.probe_max_ms = (
                probe.sent,
                probe.failed,
                round(probe.slowest_ms, 1),
            )
            if probe.failed:
                log(f"    new connections: {probe.failed} of {probe.sent} probes unanswered in {settings.timeout}s")
    return {"machine": machine_info(wrk), "dataset": dataset.counts}


class Probe(threading.Thread):
    """Can a new client get in? Every 0.5 s a fresh connection asks GET /healthz, while wrk runs.

    wrk (4.x) counts a timeout only when a late response arrives, so a connection that gunicorn
    never accepts (every greenlet of every worker holding a keep-alive connection) shows up
    nowhere in its figures. It shows up here: the probe waits in the listen backlog and times out.
    """

    def __init__(self, port: int, timeout: float, interval: float = 0.5) -> None:
        super().__init__(name="tune-probe", daemon=True)
        self.port, self.timeout, self.interval = port, timeout, interval
        self.stopping = threading.Event()
        self.sent = self.failed = 0
        self.slowest_ms = 0.0

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            started = time.monotonic()
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                conn.request("GET", "/healthz", headers={"Connection": "close"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
            finally:
                conn.close()
            self.sent += 1
            self.failed += not ok
            self.slowest_ms = max(self.slowest_ms, 1000 * (time.monotonic() - started))

    def __enter__(self) -> Probe:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.join(self.timeout + 5)


def plot(trials: list[Trial], chosen: Trial | None, title: str, footer: str, path: Path) -> None:
    """Throughput and p99 against workers, one line per WORKER_CONNECTIONS; x = rejected, ring = chosen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    workers = sorted({t.workers for t in trials})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, (ax_rps, ax_p99) = plt.subplots(2, 1, figsize=(9, 8.5), sharex=True)
    for j, wc in enumerate(sorted({t.worker_connections for t in trials})):
        series = [t for t in trials if t.worker_connections == wc and t.measured]
        xs = [workers.index(t.workers) for t in series]
        for ax, values, fmt in (
            (ax_rps, [t.rps for t in series], "{:,.0f}"),
            (ax_p99, [t.p99_ms for t in series], "{:,.0f} ms"),
        ):
            ax.plot(xs, values, marker="o", color=colors[j % len(colors)], label=f"WORKER_CONNECTIONS={wc}")
            for x, y, t in zip(xs, values, series, strict=True):
                ax.annotate(fmt.format(y), (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
                if t.rejection:
                    ax.scatter([x], [y], marker="x", s=140, color="red", zorder=3)
                if t is chosen:
                    ax.scatter([x], [y], s=420, facecolors="none", edgecolors="green", linewidths=2, zorder=3)
    for t in trials:
        if not t.measured:  # over budget or did not start: a grey x on the axis
            ax_rps.scatter([workers.index(t.workers)], [0], marker="x", s=100, color="grey", zorder=3)
    handles, _labels = ax_rps.get_legend_handles_labels()
    handles += [
        Line2D(
            [],
            [],
            marker="x",
            color="red",
            linestyle="",
            markersize=10,
            label="rejected: failed requests or stuck connections",
        ),
        Line2D(
            [], [], marker="x", color="grey", linestyle="", markersize=10, label="not run: over budget or did not start"
        ),
        Line2D([], [], marker="o", color="green", mfc="none", linestyle="", markersize=14, label="recommended"),
    ]
    ax_rps.legend(handles=handles, fontsize=8, loc="best")
    ax_rps.set_ylabel("requests / s (higher is better)")
    ax_p99.set_ylabel("p99 latency, ms (lower is better)")
    measured = [t for t in trials if t.measured]
    for ax, top in (
        (ax_rps, max((t.rps for t in measured), default=1)),
        (ax_p99, max((t.p99_ms for t in measured), default=1)),
    ):
        ax.set_ylim(0, 1.25 * top or 1)
        ax.grid(alpha=0.3)
    ax_p99.set_xticks(range(len(workers)), [str(w) for w in workers])
    ax_p99.set_xlabel("gunicorn workers per replica (WEB_CONCURRENCY)")
    ax_rps.set_title(title, fontsize=9)
    footer = "\n".join(textwrap.fill(line, 125, subsequent_indent="  ") for line in footer.splitlines())
    fig.text(0.01, 0.005, footer, fontsize=7, va="bottom", family="monospace")
    fig.tight_layout(rect=(0, 0.02 + 0.015 * footer.count("\n"), 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
