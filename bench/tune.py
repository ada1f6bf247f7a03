"""`python -m bench.tune` (`make tune`): size gunicorn workers, greenlets and DB pools by measuring.

Sweeps WEB_CONCURRENCY x WORKER_CONNECTIONS with the benchmark harness (bench/stores.py, dataset.py,
servers.py, scenarios.py: a fresh database conduit_bench_<pid>, the seeded dataset, wrk), derives the
DB pools of each setting from the rule in `pool_for` (bench/tuning_rules.py), checks the PostgreSQL
connection budget read from the server, prints a table and a recommendation with its reasoning, and
writes tune.json and tune.png.

It lives beside the benchmark, not in the service: the deployable service never imports bench/.
The harness, SQLAlchemy and matplotlib are imported when the command runs, so --help is quick.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bench.tuning_rules import DEFAULT_PEAK, MIN_PEAK, Budget, Pool, Trial, budget_lines, plan, report

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
SCENARIOS = ("anon_list", "anon_list_page40", "auth_list", "article", "profile", "tags", "feed", "comment_write", "mix")


def _int_list(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        values = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not values or values[0] < 1:
        raise click.BadParameter("expected at least one integer >= 1")
    return values


NPROC = os.cpu_count() or 1
# name, click arguments, help; each option also reads TUNE_<NAME> (the URLs: DATABASE_URL, REDIS_URL).
OPTIONS: list[tuple[str, dict[str, Any], str]] = [
    (
        "--scenario",
        {"type": click.Choice(SCENARIOS), "default": "mix"},
        "benchmark scenario (bench/run.py --help); mix = 90% reads spread over the read endpoints, 10% writes",
    ),
    (
        "--workers",
        {"default": ",".join(map(str, sorted({1, NPROC, 2 * NPROC}))), "callback": _int_list},
        "WEB_CONCURRENCY values to sweep (default: 1, cores, 2 x cores)",
    ),
    (
        "--connections",
        {"default": "32,100,1000", "callback": _int_list},
        "WORKER_CONNECTIONS values to sweep (greenlets per worker); the DB pools follow them (see docs/operations.md)",
    ),
    (
        "--clients",
        {"type": click.IntRange(1), "default": 64},
        "concurrent keep-alive connections wrk holds: what the load balancer sends to one replica (HAProxy's"
        " maxconn per server in production; 64 keeps 2 shared cores out of overload)",
    ),
    (
        "--duration",
        {"type": click.IntRange(1), "default": 10},
        "measured seconds per setting; keep it above --timeout + 1, or the probe cannot see connections never served",
    ),
    ("--warmup", {"type": click.IntRange(0), "default": 2}, "unrecorded seconds of load before each measurement"),
    (
        "--timeout",
        {"type": click.IntRange(1), "default": 5},
        "seconds after which wrk counts a request as a timeout (a socket error, which rejects the setting)",
    ),
    (
        "--replicas",
        {"type": click.IntRange(1), "default": 1},
        "replicas that will share the PostgreSQL server (the budget is split between them)",
    ),
    (
        "--headroom",
        {"type": click.IntRange(0), "default": 5},
        "PostgreSQL connections kept out of the budget for psql, migrations, monitoring",
    ),
    (
        "--max-connections",
        {"type": click.IntRange(1), "default": None},
        "budget for another server than the one measured on  [default: SHOW max_connections of --database-url]",
    ),
    (
        "--pool-cap",
        {"type": click.IntRange(MIN_PEAK), "default": DEFAULT_PEAK},
        "most DB connections per worker (reads + writes + 2 x overflow) the pools grow to",
    ),
    (
        "--tolerance",
        {"type": click.FloatRange(0, 0.5), "default": 0.10},
        "settings within this fraction of the best throughput (then of the lowest p99) count as equal",
    ),
    (
        "--database-url",
        {"default": DEFAULT_ADMIN_URL, "envvar": "DATABASE_URL"},
        "PostgreSQL server to measure on; a database conduit_bench_<pid> is created there and dropped",
    ),
    (
        "--redis-url",
        {"default": DEFAULT_REDIS_URL, "envvar": "REDIS_URL"},
        "Redis for the cache; keys go under conduit:tune:<pid>: and are deleted at the end (nothing is flushed)",
    ),
    (
        "--dataset-scale",
        {"type": click.FloatRange(0.01, 1), "default": 1.0},
        "fraction of the benchmark dataset to seed (1 = 100 users, 1,000 articles); below 1 for smoke runs only",
    ),
    (
        "--out",
        {"type": click.Path(file_okay=False, path_type=Path), "default": ROOT / "bench" / "results"},
        "directory for tune.json, tune.png and the gunicorn logs",
    ),
    (
        "--replot",
        {"is_flag": True},
        "measure nothing: re-analyse tune.json in --out (e.g. with another --tolerance), re-print, redraw tune.png",
    ),
]


def _with_options(command: Any) -> Any:
    for name, kwargs, text in reversed(OPTIONS):
        envvar = "TUNE_" + name.removeprefix("--").replace("-", "_").upper()
        kwargs = {"envvar": envvar, "show_envvar": True, "show_default": "default" in kwargs} | kwargs
        command = click.option(name, help=text, **kwargs)(command)
    return command


@click.command("tune", epilog="Example: TUNE_REPLICAS=3 make tune, or make tune TUNE_ARGS='--replicas 3'.")
@_with_options
def tune(**opts: Any) -> None:
    """Sweep workers x worker_connections with the benchmark and recommend a setting.

    For each setting the DB pools follow WORKER_CONNECTIONS and the PostgreSQL budget
    (replicas x workers x (DB_POOL_SIZE + DB_WRITE_POOL_SIZE + 2 x DB_MAX_OVERFLOW) must fit
    max_connections - reserved - headroom). Prints a table and the recommendation with its
    reasoning and env vars; writes tune.json and tune.png to --out. The defaults take about
    3 minutes on 2 cores; the machine's other load shows up in the figures.

    \b
    Pools: a worker's peak = min(WORKER_CONNECTIONS, --pool-cap, its share of the budget);
           1/5 writes, 1/5 overflow (counted twice), the rest reads; 25 -> 10 + 5 + 2 x 5.
    Pick:  1. reject settings with a failed request, an unanswered new connection, or over budget;
           2. keep those within --tolerance of the best req/s, 3. then of the lowest p99;
           4. fewest workers, then fewest DB connections per worker, then most WORKER_CONNECTIONS.
    """
    try:  # fail before measuring, not at the plot
        import matplotlib  # noqa: F401

        from bench import sweep as machinery
        from bench.common import BenchError
    except ImportError as exc:
        raise click.ClickException(
            f"tune runs from the repository with the bench requirements (make tune): {exc}"
        ) from exc
    out: Path = opts["out"]
    if opts["replot"]:
        trials, budget, saved = load_sweep(out / "tune.json")
    else:
        try:
            saved = _measure(opts, machinery)
        except BenchError as exc:  # the harness says what failed and what to do
            raise click.ClickException(str(exc)) from exc
        trials, budget = saved["_trials"], saved["_budget"]
    chosen, text = report(trials, budget, opts["tolerance"])
    click.echo("\n" + text)
    load, cores = saved.get("load_average", {}), saved["machine"].get("nproc") or 1
    if max(load.values(), default=0) > cores:
        click.echo(f"NOTE: load average {load['start']} -> {load['end']} on {cores} cores: other work competed")
    if "elapsed_s" in saved:
        click.echo(f"sweep took {saved['elapsed_s'] / 60:.1f} min")
    s = saved["settings"]
    title = (
        f"{s['scenario']} at {s['clients']} client connections, {s['duration_s']} s per setting, "
        f"{saved['machine']['nproc']} CPU(s), {budget.replicas} replica(s) budgeted"
    )
    footer = "\n".join(budget_lines(chosen, budget)) if chosen else "no recommendation: every setting was rejected"
    png = out / "tune.png"
    machinery.plot(trials, chosen, title, footer, png)
    if not opts["replot"]:
        saved["recommendation"] = chosen.env() if chosen else None
        saved["trials"] = [asdict(t) for t in trials]
        body = {k: v for k, v in saved.items() if not k.startswith("_")}
        (out / "tune.json").write_text(json.dumps(body, indent=2) + "\n")
        click.echo(f"wrote {out / 'tune.json'}")
    click.echo(f"wrote {png}")
    if chosen is None:
        sys.exit(1)


def _measure(opts: dict[str, Any], machinery: Any) -> dict[str, Any]:
    from bench.common import log
    from bench.run import on_signal

    url = opts["database_url"].replace("postgres://", "postgresql://", 1)
    if not url.startswith("postgresql"):
        raise click.BadParameter(f"needs a PostgreSQL URL, got {url!r}", param_hint="--database-url")
    opts["database_url"] = url
    if opts["duration"] < opts["timeout"] + 1:  # the first probe starts 0.5 s in and fails after --timeout
        log(f"WARNING: --duration {opts['duration']} < --timeout + 1: the probe cannot see stuck connections")
    budget, busy = machinery.read_budget(url, opts["replicas"], opts["headroom"], opts["max_connections"])
    trials = plan(opts["workers"], opts["connections"], budget, opts["pool_cap"])
    runs = sum(t.pool is not None for t in trials)
    log(
        f"{len(trials)} settings ({runs} within the budget: {budget.describe()}; {busy} connections in use now); "
        f"about {(runs * (opts['duration'] + opts['warmup'] + 5) + 30) / 60:.1f} min"
    )
    signal.signal(signal.SIGTERM, on_signal)  # unwind: stop the servers, drop the database
    started, load_before = time.monotonic(), os.getloadavg()[0]
    measured = machinery.measure(opts, trials)
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - started, 1),
        # 1-minute load averages: above the core count, other work competed with the measurement.
        "load_average": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        **measured,
        "settings": {
            "scenario": opts["scenario"],
            "clients": opts["clients"],
            "duration_s": opts["duration"],
            "warmup_s": opts["warmup"],
            "wrk_timeout_s": opts["timeout"],
            "pool_cap": opts["pool_cap"],
            "tolerance": opts["tolerance"],
            "dataset_scale": opts["dataset_scale"],
        },
        "budget": asdict(budget) | {"in_use_at_start": busy},
        "_trials": trials,
        "_budget": budget,
    }


def load_sweep(path: Path) -> tuple[list[Trial], Budget, dict[str, Any]]:
    """The trials, budget and everything else of a tune.json written by a sweep."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from exc
    budget = Budget(**{k: saved["budget"][k] for k in ("max_connections", "reserved", "headroom", "replicas")})
    trials = [Trial(**(t | {"pool": Pool(**t["pool"]) if t["pool"] else None})) for t in saved["trials"]]
    return trials, budget, saved


if __name__ == "__main__":
    tune()
