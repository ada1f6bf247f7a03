"""Benchmark the Conduit API under gunicorn + gevent with wrk (`make bench`).

What one run does, in order:

  1. installs wrk with `apt-get install -y wrk` when it is missing (says so first);
  2. creates a fresh PostgreSQL database conduit_bench_<pid> on the server of
     DATABASE_URL; in the Redis of REDIS_URL the service's keys go under
     conduit:bench:<pid>: and only those are deleted, at start and at the end
     (SCAN + DEL; nothing is flushed, other keys in that database stay);
  3. serves bench/ceiling.py (a bare WSGI app answering a fixed 200-byte JSON)
     twice under the service's own gunicorn.conf.py and measures it at each
     connection count: once with gunicorn's stock `-k gevent` worker (the
     "reference": fixed, so a faster service worker shows as a gain) and once
     with the service's worker, service.runtime.worker.GeventWorker (the
     "ceiling": the same stack with no Flask, no database and no cache, and
     the reference for the tail latencies);
  4. applies the migrations (`flask --app service db upgrade`), starts the
     service (APP_ENV=production, a generated SECRET_KEY, PostgreSQL + Redis,
     access log off) on a free port and seeds it through the public API with a
     deterministic dataset (random.Random(42)): 100 users, 1,000 articles with
     1-4 of 30 tags, 3,000 favorites, 500 follows, 2,000 comments;
  5. runs every scenario for BENCH_DURATION seconds at each connection count
     (after an unrecorded warm-up of BENCH_WARMUP seconds per scenario);
  6. restarts the service with CACHE_TYPE=NullCache and runs the list
     scenarios again (anon_list, anon_list_page40, auth_list, feed);
  7. prints a table, writes bench/results/latest.json and latest.png;
  8. always stops the servers, drops the database and deletes its Redis keys,
     on error and Ctrl-C too.

Scenarios (wrk Lua scripts in bench/wrk/):

  anon_list         GET /api/articles, anonymous
  anon_list_page40  GET /api/articles?offset=780&limit=20 (page 40, to compare with page 1)
  anon_list_gzip    GET /api/articles with Accept-Encoding: gzip (the stored gzip variant)
  auth_list         GET /api/articles with Authorization: Token <random user>
  article           GET /api/articles/<random slug>
  profile           GET /api/profiles/<random username>
  tags              GET /api/tags
  feed              GET /api/articles/feed as a random user
  comment_write     POST /api/articles/<random slug>/comments as a random user
  mix               90% reads spread over the read scenarios, 10% writes
                    (5% comments, 2.5% favorite, 2.5% unfavorite)

Columns of the table, per scenario and connection count: req/s; latency
percentiles in ms (wrk --latency, wrk's own histogram, coordinated omission
not corrected); errors: http (answers that are not 2xx/3xx), sock (connect,
read and write errors) and t/o (timeouts, after --timeout seconds); % ref and
% ceil, the scenario's req/s as a share of the reference's and of the
ceiling's at the same connection count; cached, the service's own
conduit_cache_hits_total per GET it answered (both scraped from /metrics
before and after the run): the share of reads served from the cache, the
mix's writes left out; fast, conduit_cache_fastpath_total per request wrk
made: the share answered ahead of the framework (a fast-path answer also
counts as a hit; a request that reads two cached entries counts two, so
cached can pass 100%); "-" for the bare app, which has
no /metrics; and req/s with the cache disabled (NullCache) where measured.
Every status and socket error of a run is in latest.json; the gunicorn logs
(bench/results/gunicorn-*.log) say why a request failed.

The load generator runs on the same machine as the server, PostgreSQL and
Redis, and takes CPU from them: compare runs made on the same machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):  # run as a script (bench/run.py): import bench and ops from the checkout
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import haproxy
from bench.common import (
    DEFAULT_ADMIN_URL,
    DEFAULT_REDIS_URL,
    LIST_SCENARIOS,
    RESULTS,
    SCENARIOS,
    BenchError,
    Settings,
    log,
)
from bench.dataset import SEED, seed, write_data_files
from bench.report import BARE, machine_info, render, replot, runs_with_shares, show
from bench.scenarios import Runner, ensure_wrk
from bench.servers import Server, migrate, service_env
from bench.stores import RedisStats, bench_database, key_prefix, own_keys, postgres_version


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise BenchError(f"{name}={value!r} is not an integer") from None


def parse_args(argv: list[str] | None = None) -> Settings:
    nproc = os.cpu_count() or 1
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Every option defaults to its environment variable, so `make bench` can be tuned with\n"
            "e.g. `BENCH_DURATION=3 BENCH_CONNECTIONS=64 BENCH_SCENARIOS=anon_list,tags make bench`.\n"
            "A full default run (9 scenarios + reference + ceiling + 4 NullCache scenarios, 2 connection\n"
            "counts, 15 s each) takes about 9 minutes."
        ),
    )
    parser.add_argument(
        "--duration",
        type=int,
        default=_env_int("BENCH_DURATION", 15),
        help="seconds per measured run [env BENCH_DURATION, default 15]",
    )
    parser.add_argument(
        "--scenarios",
        default=os.environ.get("BENCH_SCENARIOS") or ",".join(SCENARIOS),
        help="comma-separated scenarios to run, from: " + ", ".join(SCENARIOS) + " [env BENCH_SCENARIOS, default all]",
    )
    parser.add_argument(
        "--connections",
        default=os.environ.get("BENCH_CONNECTIONS") or "64,256",
        help="comma-separated wrk connection counts [env BENCH_CONNECTIONS, default 64,256]",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int("BENCH_WORKERS", nproc),
        help=f"gunicorn worker processes (WEB_CONCURRENCY) [env BENCH_WORKERS, default nproc = {nproc}]",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=_env_int("BENCH_THREADS", max(1, nproc // 4)),
        help="wrk threads; keep small, wrk shares the CPUs with the server "
        f"[env BENCH_THREADS, default nproc/4, at least 1 = {max(1, nproc // 4)}]",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=_env_int("BENCH_TIMEOUT", 5),
        help="seconds before wrk counts a request as a timeout (a socket error) [env BENCH_TIMEOUT, default 5]",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=_env_int("BENCH_WARMUP", 2),
        help="unrecorded seconds of each scenario before its runs, 0 to skip [env BENCH_WARMUP, default 2]",
    )
    parser.add_argument(
        "--no-nullcache",
        dest="nullcache",
        action="store_false",
        help="skip the second pass of the list scenarios with CACHE_TYPE=NullCache [env BENCH_NULLCACHE=0]",
    )
    parser.add_argument(
        "--haproxy",
        action="store_true",
        default=os.environ.get("BENCH_HAPROXY", "0").strip().lower() in ("1", "true", "yes"),
        help="run every scenario a second time through HAProxy (the project's haproxy.cfg in front of the "
        "service, the path production takes; rows marked 'via HAProxy') [env BENCH_HAPROXY=1]",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL") or DEFAULT_ADMIN_URL,
        help="admin URL of the PostgreSQL server; the run creates and drops its own database "
        f"conduit_bench_<pid> there [env DATABASE_URL, default {DEFAULT_ADMIN_URL}]",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL,
        help="Redis for the cache; the run's keys go under conduit:bench:<pid>: and only they are deleted, "
        f"at start and at the end (nothing is flushed) [env REDIS_URL, default {DEFAULT_REDIS_URL}]",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help="directory for latest.json, latest.png and the gunicorn logs [default bench/results]",
    )
    parser.add_argument(
        "--replot",
        action="store_true",
        help="measure nothing: re-print the table and redraw latest.png from the out directory's latest.json",
    )
    args = parser.parse_args(argv)
    if os.environ.get("BENCH_NULLCACHE", "1").strip().lower() in ("0", "false", "no"):
        args.nullcache = False

    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown or not scenarios:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    try:
        connections = sorted({int(c) for c in args.connections.split(",") if c.strip()})
    except ValueError:
        parser.error(f"--connections/BENCH_CONNECTIONS must be integers, got {args.connections!r}")
    if not connections or min(connections) < 1:
        parser.error("need at least one connection count >= 1")
    for name in ("duration", "workers", "threads", "timeout"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    admin_url = args.database_url.replace("postgres://", "postgresql://", 1)
    if not admin_url.startswith("postgresql"):
        parser.error(f"DATABASE_URL must be a PostgreSQL URL, got {args.database_url!r}")
    return Settings(
        duration=args.duration,
        # Canonical order: reads first, writes last, so the writes don't change what the reads see.
        scenarios=[s for s in SCENARIOS if s in scenarios],
        connections=connections,
        workers=args.workers,
        threads=args.threads,
        timeout=args.timeout,
        warmup=max(0, args.warmup),
        nullcache=args.nullcache,
        admin_url=admin_url,
        redis_url=args.redis_url,
        out=args.out,
        replot=args.replot,
        haproxy=args.haproxy,
    )


def on_signal(signum: int, _frame: object) -> None:
    """SIGINT/SIGTERM: unwind through the cleanup (stop servers, drop the database) once.

    Further signals are ignored so a second Ctrl-C cannot cut the cleanup short; it is
    bounded by timeouts (gunicorn's graceful stop, then kill).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    log("terminated; cleaning up")
    raise SystemExit(128 + signum)


def run(settings: Settings) -> int:
    started = time.monotonic()
    wrk = ensure_wrk()
    settings.out.mkdir(parents=True, exist_ok=True)
    redis_stats = RedisStats(settings.redis_url)
    budget = settings.workers * 15
    if budget > 90:
        log(
            f"WARNING: {settings.workers} workers x 15 pooled connections = {budget}, near or above PostgreSQL's"
            " default max_connections (100); lower BENCH_WORKERS or expect 503s"
        )

    with contextlib.ExitStack() as stack:
        stack.callback(redis_stats.close)
        db_url = stack.enter_context(bench_database(settings.admin_url))
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="conduit-bench-")))
        prefix = stack.enter_context(own_keys(redis_stats, key_prefix()))
        bare = [("reference", ["--worker-class", "gevent"]), ("ceiling", [])]

        base_env = service_env(db_url, settings.redis_url, settings.workers) | {"CACHE_KEY_PREFIX": prefix}
        runner = Runner(settings, wrk, data_dir)
        n_conns = len(settings.connections)
        list_scenarios = [s for s in settings.scenarios if s in LIST_SCENARIOS] if settings.nullcache else []
        proxied = len(settings.scenarios) if settings.haproxy else 0
        runner.total_runs = n_conns * (len(bare) + len(settings.scenarios) + proxied + len(list_scenarios))
        estimate = runner.total_runs * settings.duration + settings.warmup * (
            len(bare) + len(settings.scenarios) + len(list_scenarios)
        )
        log(
            f"{runner.total_runs} runs of {settings.duration}s at connections {settings.connections}, "
            f"{settings.workers} gunicorn workers, {settings.threads} wrk thread(s); "
            f"about {estimate / 60:.1f} min of load plus set-up"
        )

        for label, args in bare:
            with Server(label, base_env, settings.out, app_uri="bench.ceiling:app", args=args) as server:
                runner.scenario(server, label, label, script="ceiling")

        migrate(base_env)
        pg_version = postgres_version(db_url)
        with Server("cache", base_env, settings.out) as service:
            dataset = seed(service.base_url)
            write_data_files(dataset, data_dir)
            for scenario in settings.scenarios:
                runner.scenario(service, "cache", scenario)
            if settings.haproxy:
                with haproxy.in_front(service.port, settings.out) as url:
                    proxy = copy.copy(service)
                    proxy.base_url = url
                    for scenario in settings.scenarios:
                        runner.scenario(proxy, "haproxy", scenario)

        if list_scenarios:
            with Server("nullcache", {**base_env, "CACHE_TYPE": "NullCache"}, settings.out) as service:
                for scenario in list_scenarios:
                    runner.scenario(service, "nullcache", scenario)

    results = runner.results
    info = machine_info(wrk)
    info["versions"]["postgresql"] = pg_version
    info["versions"]["redis_server"] = redis_stats.version()
    elapsed = time.monotonic() - started
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "machine": info,
        "settings": {
            "duration_s": settings.duration,
            "scenarios": settings.scenarios,
            "connections": settings.connections,
            "gunicorn_workers": settings.workers,
            "wrk_threads": settings.threads,
            "wrk_timeout_s": settings.timeout,
            "warmup_s": settings.warmup,
            "nullcache_pass": settings.nullcache,
            "redis_url": settings.redis_url,
        },
        "dataset": {"seed": SEED, **dataset.counts, "seeding_s": round(dataset.seconds, 1)},
        "scenarios": {**BARE, **SCENARIOS},
        "runs": runs_with_shares(results),
    }
    json_path = settings.out / "latest.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    render(results, settings, info)
    print(f"wrote {show(json_path)}")
    print(f"total time {elapsed / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        return replot(settings) if settings.replot else run(settings)
    except BenchError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted; servers stopped and database dropped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
