"""Benchmark the Conduit API under gunicorn + gevent with wrk (`make bench`).

What one run does, in order:

  1. installs wrk with `apt-get install -y wrk` when it is missing (says so first);
  2. creates a fresh PostgreSQL database conduit_bench_<pid> on the server of
     DATABASE_URL; in the Redis of REDIS_URL the service's keys go under
     conduit:bench:<pid>: and only those are deleted, at start and at the end
     (SCAN + DEL; nothing is flushed, other keys in that database stay);
  3. serves bench/ceiling.py (a bare WSGI app answering a fixed 200-byte JSON)
     under the service's own gunicorn.conf.py and measures it at each
     connection count: the framework-free ceiling of this machine;
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
  auth_list         GET /api/articles with Authorization: Token <random user>
  article           GET /api/articles/<random slug>
  profile           GET /api/profiles/<random username>
  tags              GET /api/tags
  feed              GET /api/articles/feed as a random user
  comment_write     POST /api/articles/<random slug>/comments as a random user
  mix               90% reads spread over the read scenarios, 10% writes
                    (5% comments, 2.5% favorite, 2.5% unfavorite)

Columns of the table: req/s; latency percentiles in ms (wrk's own histogram,
coordinated omission not corrected); non-2xx responses; socket errors (connect,
read, write, timeout; they count as failures like non-2xx); the ratio to the
ceiling's req/s at the same connection count; the cache hit ratio, from the
delta of Redis INFO keyspace_hits / keyspace_misses around the run ("n/a" when
nothing touched Redis); and req/s with the cache disabled (NullCache) where
measured. The Redis counters are server-wide (keep other Redis clients quiet)
and count every key read, the cache layer's bookkeeping keys included, so read
the hit ratio as a trend, not as the share of responses served from cache.
The ceiling never touches Redis: a ratio in its row means another client used
that Redis server during the run (the ratios of that run are then polluted).
Every status and socket error of a run is in latest.json; the gunicorn logs
(bench/results/gunicorn-*.log) say why a request failed.

The load generator runs on the same machine as the server, PostgreSQL and
Redis, and takes CPU from them: compare runs made on the same machine only.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WRK_DIR = BENCH / "wrk"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"

SCENARIOS: dict[str, str] = {
    "anon_list": "GET /api/articles",
    "anon_list_page40": "GET /api/articles?offset=780&limit=20",
    "auth_list": "GET /api/articles (auth)",
    "article": "GET /api/articles/<slug>",
    "profile": "GET /api/profiles/<username>",
    "tags": "GET /api/tags",
    "feed": "GET /api/articles/feed (auth)",
    "comment_write": "POST /api/articles/<slug>/comments (auth)",
    "mix": "90% reads / 10% writes",
}
LIST_SCENARIOS = ("anon_list", "anon_list_page40", "auth_list", "feed")

# The dataset. Counts are exact; who does what comes from random.Random(SEED).
SEED = 42
N_USERS = 100
N_ARTICLES = 1000
N_TAGS = 30
N_FAVORITES = 3000
N_FOLLOWS = 500
N_COMMENTS = 2000
SEED_THREADS = 16

# Filler text for titles, bodies and comments.
WORDS = (  # noqa: SIM905 - a word list reads better as text
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar "
    "papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu amber basil cedar dune "
    "ember fjord glade harbor island jungle kettle lantern meadow nectar orchard pebble quartz "
    "river summit timber umber valley willow yarrow zenith"
).split()


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why and what to do."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    duration: int
    scenarios: list[str]
    connections: list[int]
    workers: int
    threads: int
    timeout: int
    warmup: int
    nullcache: bool
    admin_url: str
    redis_url: str
    out: Path
    replot: bool = False


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
            "A full default run (9 scenarios + ceiling + 4 NullCache scenarios, 2 connection counts,\n"
            "15 s each) takes about 8-9 minutes."
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
    )


# --------------------------------------------------------------------------- wrk


def _run_loud(cmd: list[str]) -> bool:
    log("running: " + " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode == 0  # noqa: S603 - fixed argv, no shell


def ensure_wrk() -> str:
    """Path to wrk, installing it with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt:
        raise BenchError("wrk is not installed and apt-get is not available: install wrk (https://github.com/wg/wrk)")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo:
            raise BenchError("wrk is not installed; run `sudo apt-get install -y wrk` (not root, no sudo here)")
        prefix = [sudo, "-n"]
    log("wrk is not installed; installing it with apt-get")
    if not _run_loud([*prefix, apt, "install", "-y", "wrk"]):
        log("apt-get install failed; refreshing the package lists and trying once more")
        if not (_run_loud([*prefix, apt, "update"]) and _run_loud([*prefix, apt, "install", "-y", "wrk"])):
            raise BenchError("could not install wrk with apt-get (see above); install it yourself and retry")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but wrk is still not on PATH")
    return found


@dataclass
class RunResult:
    server: str  # "ceiling", "cache" or "nullcache"
    scenario: str
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non2xx: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    cache_hits: int
    cache_misses: int

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def cache_hit_ratio(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["socket_errors_total"] = self.socket_error_total
        data["failures"] = self.non2xx + self.socket_error_total
        data["cache_hit_ratio"] = self.cache_hit_ratio
        return data


def run_wrk(
    wrk: str, settings: Settings, base_url: str, script: str, connections: int, duration: int, data_dir: Path
) -> dict[str, Any]:
    threads = min(settings.threads, connections)
    cmd = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        f"--timeout={settings.timeout}s",
        f"--script={WRK_DIR / (script + '.lua')}",
        base_url + "/",
    ]
    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir), "BENCH_WRK_DIR": str(WRK_DIR)}
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        cmd, env=env, capture_output=True, text=True, check=False, timeout=duration + settings.timeout + 60
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return dict(json.loads(line.removeprefix("BENCH_RESULT ")))
    raise BenchError(
        f"wrk gave no result for {script} (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    )


# --------------------------------------------------------------------------- PostgreSQL, Redis


@contextlib.contextmanager
def bench_database(admin_url: str) -> Iterator[str]:
    """Create conduit_bench_<pid>; yield its URL; drop it (even if the run failed)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(admin_url)
    admin = create_engine(
        url.set(drivername="postgresql+psycopg2"), isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    name = f"conduit_bench_{os.getpid()}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise BenchError(f"PostgreSQL at {url.render_as_string()} is unavailable: {exc}") from exc
    log(f"created database {name}")
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            log(f"dropped database {name}")
        except Exception as exc:
            log(f"WARNING: could not drop database {name}: {exc}")
        admin.dispose()


def postgres_version(db_url: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def key_prefix() -> str:
    """The namespace of this run's keys in a shared Redis."""
    return f"conduit:bench:{os.getpid()}:"


@contextlib.contextmanager
def own_keys(redis_stats: RedisStats, prefix: str) -> Iterator[str]:
    """Delete the keys under `prefix` now (a crashed earlier run of this pid) and when done, even on error."""
    gone = redis_stats.forget(prefix)
    if gone:
        log(f"deleted {gone} leftover keys under {prefix} in Redis {redis_stats.url}")
    try:
        yield prefix
    finally:
        try:
            log(f"deleted {redis_stats.forget(prefix)} keys under {prefix} in Redis {redis_stats.url}")
        except Exception as exc:
            log(f"WARNING: could not delete the keys under {prefix} in Redis {redis_stats.url}: {exc}")


class RedisStats:
    def __init__(self, url: str) -> None:
        import redis

        self.url = url
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            raise BenchError(f"Redis at {url} is unavailable: {exc}") from exc

    def forget(self, prefix: str) -> int:
        """Delete the keys under `prefix` (SCAN MATCH prefix* + DEL, never FLUSHDB); how many."""
        if not prefix or any(c in prefix for c in "*?[]\\"):
            raise BenchError(f"refusing to delete keys by the pattern {prefix!r}*")
        deleted, batch = 0, []
        for key in self.client.scan_iter(match=prefix + "*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                deleted += int(self.client.delete(*batch))
                batch = []
        if batch:
            deleted += int(self.client.delete(*batch))
        return deleted

    def counters(self) -> tuple[int, int]:
        stats = self.client.info("stats")
        return int(stats["keyspace_hits"]), int(stats["keyspace_misses"])

    def version(self) -> str:
        return str(self.client.info("server")["redis_version"])

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------- gunicorn


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """gunicorn -c gunicorn.conf.py [app] on a free loopback port, its log in the results directory."""

    def __init__(self, label: str, env: dict[str, str], log_dir: Path, app_uri: str | None = None) -> None:
        self.label = label
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.cmd = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *([app_uri] if app_uri else [])]
        self.log_path = log_dir / f"gunicorn-{label}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log(f"starting {self.label} server on {self.base_url} ({' '.join(self.cmd[1:])}; log {self.log_path})")
        with open(self.log_path, "wb") as log_file:
            self.proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                self.cmd, env=self.env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as resp:  # noqa: S310 - loopback
                    if resp.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise BenchError(f"{self.label} server did not start; end of {self.log_path}:\n{tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log(f"stopped {self.label} server")

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_env(db_url: str, redis_url: str, workers: int) -> dict[str, str]:
    """The environment of a benchmarked service: production profile, a fresh secret, access log off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BIND", "HOST", "PORT", "CACHE_TYPE", "WEB_CONCURRENCY", "ACCESS_LOG", "APP_ENV")
    }
    env.update(
        {
            "APP_ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(36),  # 48 characters
            "DATABASE_URL": db_url,
            "REDIS_URL": redis_url,
            "WEB_CONCURRENCY": str(workers),
            "ACCESS_LOG": "",
            # One load generator writes as a few users from one address: production limits would
            # turn the write scenarios into 429s. The limiter's own cost is not what is measured.
            "RATELIMIT_ENABLED": "0",
        }
    )
    return env


def migrate(env: dict[str, str]) -> None:
    log("applying migrations (flask --app service db upgrade)")
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [str(BIN / "flask"), "--app", "service", "db", "upgrade"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(f"migrations failed:\n{proc.stdout}{proc.stderr}")


# --------------------------------------------------------------------------- seeding


class Progress:
    """A text progress bar on stderr (one line per 10% when stderr is not a terminal)."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total = total
        self.width = width
        self.done = 0
        self.phase = ""
        self.lock = threading.Lock()
        self.tty = sys.stderr.isatty()
        self.last_draw = 0.0
        self.last_decile = -1
        self.started = time.monotonic()

    def set_phase(self, phase: str) -> None:
        with self.lock:
            self.phase = phase
            self._draw(force=True)

    def advance(self, n: int = 1) -> None:
        with self.lock:
            self.done += n
            self._draw(force=self.done == self.total)

    def _draw(self, force: bool) -> None:
        fraction = self.done / self.total if self.total else 1.0
        elapsed = time.monotonic() - self.started
        if self.tty:
            now = time.monotonic()
            if not force and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            filled = int(fraction * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            sys.stderr.write(
                f"\rseeding [{bar}] {fraction:4.0%} {self.done}/{self.total} {self.phase:<10} {elapsed:5.1f}s"
            )
            sys.stderr.flush()
        else:
            decile = int(fraction * 10)
            if decile != self.last_decile:
                self.last_decile = decile
                print(f"seeding {fraction:4.0%} {self.done}/{self.total} {self.phase} {elapsed:.1f}s", file=sys.stderr)

    def finish(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


class ApiClient:
    """JSON over http.client, one keep-alive connection per thread."""

    def __init__(self, base_url: str) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.local = threading.local()

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            return conn, True
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        self.local.conn = conn
        return conn, False

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Token {token}"
        for _attempt in range(2):
            conn, reused = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if not reused:  # a fresh connection failed: the server is in trouble, not a stale keep-alive
                    raise
        if not 200 <= resp.status < 300:
            raise BenchError(f"seeding: {method} {path} answered {resp.status}: {data[:300].decode(errors='replace')}")
        return json.loads(data) if data else None

    def close(self) -> None:
        conn = getattr(self.local, "conn", None)
        if conn is not None:
            conn.close()


@dataclass
class Dataset:
    usernames: list[str]
    tokens: list[str]
    slugs: list[str]
    counts: dict[str, int]
    seconds: float


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def seed(base_url: str, scale: float = 1.0) -> Dataset:
    """Create the deterministic dataset through the public API.

    `scale` < 1 seeds proportionally fewer users, articles and relations (a quick smoke run; the
    figures of a smaller database are not comparable with the recorded ones).
    """
    n_users, n_articles, n_favorites, n_follows, n_comments = (
        max(2, round(n * scale)) for n in (N_USERS, N_ARTICLES, N_FAVORITES, N_FOLLOWS, N_COMMENTS)
    )
    n_favorites = min(n_favorites, n_users * n_articles)
    n_follows = min(n_follows, n_users * (n_users - 1))
    rng = random.Random(SEED)  # noqa: S311 - a reproducible dataset, not a secret
    tags = [f"{WORDS[i]}-{i:02d}" for i in range(N_TAGS)]
    users = [
        {"username": f"bench_user_{i:03d}", "email": f"bench_user_{i:03d}@example.com", "password": f"password-{i:03d}"}
        for i in range(n_users)
    ]
    for user in users:
        user["bio"] = _words(rng, 5, 20)
    articles: list[dict[str, Any]] = [
        {
            "author": rng.randrange(n_users),
            "article": {
                "title": f"{_words(rng, 3, 7).capitalize()} {i}",
                "description": _words(rng, 8, 20),
                "body": _words(rng, 100, 400),
                "tagList": rng.sample(tags, rng.randint(1, 4)),
            },
        }
        for i in range(n_articles)
    ]
    favorites = [divmod(n, n_articles) for n in rng.sample(range(n_users * n_articles), n_favorites)]
    pairs = [(a, b) for a in range(n_users) for b in range(n_users) if a != b]
    follows = rng.sample(pairs, n_follows)
    comments = [(rng.randrange(n_users), rng.randrange(n_articles), _words(rng, 5, 60)) for _ in range(n_comments)]

    total = n_users * 2 + n_articles + n_favorites + n_follows + n_comments
    progress = Progress(total)
    api = ApiClient(base_url)
    tokens: list[str] = [""] * n_users
    slugs: list[str] = [""] * n_articles
    started = time.monotonic()

    def in_pool(pool: ThreadPoolExecutor, fn: Callable[[Any], None], items: list[Any]) -> None:
        futures = [pool.submit(fn, item) for item in items]
        try:
            for future in futures:
                future.result()  # re-raises the first failure
        except BaseException:
            for future in futures:
                future.cancel()  # fail fast (and on Ctrl-C) instead of sending the rest
            raise

    def register(i: int) -> None:
        user = users[i]
        body = {"user": {k: user[k] for k in ("username", "email", "password")}}
        tokens[i] = api.call("POST", "/api/users", body)["user"]["token"]
        api.call("PUT", "/api/user", {"user": {"bio": user["bio"]}}, tokens[i])
        progress.advance(2)

    def create_article(i: int) -> None:
        item = articles[i]
        created = api.call("POST", "/api/articles", {"article": item["article"]}, tokens[item["author"]])
        slugs[i] = created["article"]["slug"]
        progress.advance()

    def relate(item: tuple[str, Any]) -> None:
        kind, data = item
        if kind == "favorite":
            user, article = data
            api.call("POST", f"/api/articles/{slugs[article]}/favorite", None, tokens[user])
        elif kind == "follow":
            follower, followee = data
            api.call("POST", f"/api/profiles/{users[followee]['username']}/follow", None, tokens[follower])
        else:
            user, article, text = data
            api.call("POST", f"/api/articles/{slugs[article]}/comments", {"comment": {"body": text}}, tokens[user])
        progress.advance()

    try:
        with ThreadPoolExecutor(SEED_THREADS, thread_name_prefix="seed") as pool:
            progress.set_phase("users")
            in_pool(pool, register, list(range(n_users)))
            progress.set_phase("articles")
            in_pool(pool, create_article, list(range(n_articles)))
            progress.set_phase("relations")
            relations: list[tuple[str, Any]] = [
                *(("favorite", f) for f in favorites),
                *(("follow", f) for f in follows),
                *(("comment", c) for c in comments),
            ]
            random.Random(SEED + 1).shuffle(relations)  # noqa: S311 - reproducible order
            in_pool(pool, relate, relations)
    finally:
        progress.finish()
        api.close()
    seconds = time.monotonic() - started
    counts = {
        "users": n_users,
        "articles": n_articles,
        "tags": N_TAGS,
        "favorites": n_favorites,
        "follows": n_follows,
        "comments": n_comments,
        "requests": total - n_users,
    }
    log(f"seeded {counts} in {seconds:.1f}s")
    return Dataset([u["username"] for u in users], tokens, slugs, counts, seconds)


def write_data_files(data: Dataset, data_dir: Path) -> None:
    (data_dir / "slugs.txt").write_text("\n".join(data.slugs) + "\n")
    (data_dir / "usernames.txt").write_text("\n".join(data.usernames) + "\n")
    (data_dir / "tokens.txt").write_text("\n".join(data.tokens) + "\n")


# --------------------------------------------------------------------------- measuring


class Runner:
    def __init__(self, settings: Settings, wrk: str, redis_stats: RedisStats, data_dir: Path) -> None:
        self.settings = settings
        self.wrk = wrk
        self.redis = redis_stats
        self.data_dir = data_dir
        self.results: list[RunResult] = []
        self.total_runs = 0
        self.done_runs = 0

    def scenario(self, server: Server, kind: str, scenario: str, script: str | None = None) -> None:
        script = script or scenario
        s = self.settings
        if s.warmup:
            run_wrk(self.wrk, s, server.base_url, script, s.connections[0], s.warmup, self.data_dir)
        for connections in s.connections:
            self.done_runs += 1
            log(f"[{self.done_runs}/{self.total_runs}] {kind:9} {scenario:16} c={connections:<4} {s.duration}s ...")
            hits0, misses0 = self.redis.counters()
            raw = run_wrk(self.wrk, s, server.base_url, script, connections, s.duration, self.data_dir)
            hits1, misses1 = self.redis.counters()
            latency = raw["latency_us"]
            duration_s = raw["duration_us"] / 1e6
            result = RunResult(
                server=kind,
                scenario=scenario,
                connections=connections,
                requests=int(raw["requests"]),
                duration_s=round(duration_s, 3),
                rps=round(raw["requests"] / duration_s, 1) if duration_s else 0.0,
                p50_ms=latency["p50"] / 1000,
                p90_ms=latency["p90"] / 1000,
                p99_ms=latency["p99"] / 1000,
                mean_ms=round(latency["mean"] / 1000, 3),
                max_ms=latency["max"] / 1000,
                non2xx=int(raw["non2xx"]),
                statuses={str(k): int(v) for k, v in sorted(raw["statuses"].items())},
                socket_errors={k: int(v) for k, v in raw["socket_errors"].items()},
                cache_hits=hits1 - hits0,
                cache_misses=misses1 - misses0,
            )
            self.results.append(result)
            ratio = result.cache_hit_ratio
            log(
                f"    {result.rps:9.1f} req/s  p99 {result.p99_ms:7.1f} ms  non-2xx {result.non2xx}"
                f"  socket errors {result.socket_error_total}"
                f"  cache {'n/a' if ratio is None else f'{ratio:.0%}'}"
            )


# --------------------------------------------------------------------------- reporting


def _cmd_output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10, cwd=ROOT)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout or proc.stderr).strip()


def machine_info(wrk: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = re.search(r"^MemTotal:\s+(\d+)", meminfo, re.M)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    versions: dict[str, str | None] = {}
    for package in ("gunicorn", "gevent", "greenlet", "Flask", "Werkzeug", "SQLAlchemy", "psycopg2-binary", "redis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    git = shutil.which("git")
    commit = _cmd_output([git, "rev-parse", "HEAD"]) if git else ""
    dirty = bool(_cmd_output([git, "status", "--porcelain"])) if git else None
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mib": int(mem_kib.group(1)) // 1024 if mem_kib else None,
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": _cmd_output([wrk, "-v"]).splitlines()[0] if _cmd_output([wrk, "-v"]) else None,
        "versions": versions,
        "git_commit": commit or None,
        "git_dirty": dirty,
    }


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def table(results: list[RunResult], settings: Settings) -> str:
    ceiling = {r.connections: r.rps for r in results if r.server == "ceiling"}
    nullcache = {(r.scenario, r.connections): r for r in results if r.server == "nullcache"}
    header = (
        "scenario",
        "conns",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "non-2xx",
        "sock err",
        "vs ceiling",
        "cache hit",
        "NullCache req/s",
    )
    rows: list[tuple[str, ...]] = []
    order = ["ceiling", *settings.scenarios]
    for scenario in order:
        for r in results:
            if r.scenario != scenario or r.server == "nullcache":
                continue
            ceil = ceiling.get(r.connections)
            nc = nullcache.get((r.scenario, r.connections))
            rows.append(
                (
                    scenario,
                    str(r.connections),
                    f"{r.rps:,.0f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p90_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    str(r.non2xx),
                    str(r.socket_error_total),
                    "-" if r.server == "ceiling" or not ceil else f"{r.rps / ceil:.1%}",
                    _fmt_ratio(r.cache_hit_ratio),
                    "-" if nc is None else f"{nc.rps:,.0f}",
                )
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def plot(results: list[RunResult], settings: Settings, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = ["ceiling", *settings.scenarios]
    series: list[tuple[str, str, int]] = [("cache", "", c) for c in settings.connections]
    series += [("nullcache", "//", c) for c in settings.connections if any(r.server == "nullcache" for r in results)]
    lookup = {(r.server if r.server != "ceiling" else "cache", r.scenario, r.connections): r for r in results}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    service_rps = [r.rps for r in results if r.server != "ceiling"]
    ceiling_rps = [r.rps for r in results if r.server == "ceiling"]
    # A ceiling far above the service would flatten every other bar: clip it and print its value.
    clip = 1.35 * max(service_rps) if service_rps and ceiling_rps and max(ceiling_rps) > 3 * max(service_rps) else None

    fig, (ax_rps, ax_p99) = plt.subplots(2, 1, figsize=(max(10, 1.3 * len(scenarios) + 4), 9), sharex=True)
    width = 0.8 / len(series)
    for j, (kind, hatch, connections) in enumerate(series):
        color = colors[settings.connections.index(connections) % len(colors)]
        label = f"c={connections}" + (" NullCache" if kind == "nullcache" else "")
        xs, rps, p99, rps_labels = [], [], [], []
        for i, scenario in enumerate(scenarios):
            r = lookup.get((kind, scenario, connections))
            if r is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            rps.append(r.rps)
            p99.append(r.p99_ms)
            if clip and r.rps > clip:
                rps_labels.append("")
                ax_rps.text(
                    x, clip * 0.97, f"{r.rps:,.0f} (clipped)", rotation=90, ha="center", va="top", fontsize=7, color="w"
                )
            else:
                rps_labels.append(f"{r.rps:,.0f}")
        style = {
            "color": color,
            "hatch": hatch,
            "edgecolor": "black" if hatch else color,
            "alpha": 0.55 if hatch else 1,
        }
        bars = ax_rps.bar(xs, rps, width, label=label, **style)
        ax_rps.bar_label(bars, labels=rps_labels, fontsize=7, rotation=90, padding=2)
        bars = ax_p99.bar(xs, p99, width, label=label, **style)
        ax_p99.bar_label(bars, fmt="{:,.0f}", fontsize=7, rotation=90, padding=2)

    ax_rps.set_ylabel("requests / s")
    if clip:
        ax_rps.set_ylim(0, clip)
    else:
        ax_rps.margins(y=0.25)
    ax_p99.set_ylabel("p99 latency, ms")
    ax_p99.margins(y=0.2)
    ax_rps.set_title(title, fontsize=10)
    ax_rps.legend(fontsize=8, ncols=len(series))
    ax_p99.legend(fontsize=8, ncols=len(series))
    for ax in (ax_rps, ax_p99):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax_p99.set_xticks(range(len(scenarios)), scenarios, rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def _show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def render(results: list[RunResult], settings: Settings, info: dict[str, Any]) -> None:
    """Print the table and the failures; draw latest.png."""
    png_path = settings.out / "latest.png"
    title = (
        f"Conduit on {info['nproc']} CPU(s) ({info['cpu_model']}), {settings.workers} gevent workers, "
        f"{settings.duration}s per run; hatched = NullCache"
    )
    plot(results, settings, png_path, title)
    print()
    print(table(results, settings))
    print()
    for r in results:
        if r.non2xx or r.socket_error_total:
            print(
                f"FAILURES {r.server}/{r.scenario} c={r.connections}: non-2xx {r.non2xx} {r.statuses}, "
                f"socket errors {r.socket_errors}"
            )
    noise = sum(r.cache_hits + r.cache_misses for r in results if r.server == "ceiling")
    if noise:
        print(
            f"NOTE: Redis served {noise} key reads during the ceiling runs, which never touch it: another client"
            " is using that Redis server, so the cache hit ratios include its traffic"
        )
    print(f"wrote {_show(png_path)}")


def replot(settings: Settings) -> int:
    path = settings.out / "latest.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    fields = set(RunResult.__dataclass_fields__)
    results = [RunResult(**{k: v for k, v in run.items() if k in fields}) for run in report["runs"]]
    saved = report["settings"]
    settings = replace(
        settings,
        duration=saved["duration_s"],
        scenarios=saved["scenarios"],
        connections=saved["connections"],
        workers=saved["gunicorn_workers"],
    )
    render(results, settings, report["machine"])
    return 0


def _on_signal(signum: int, _frame: object) -> None:
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

        base_env = service_env(db_url, settings.redis_url, settings.workers) | {"CACHE_KEY_PREFIX": prefix}
        runner = Runner(settings, wrk, redis_stats, data_dir)
        n_conns = len(settings.connections)
        list_scenarios = [s for s in settings.scenarios if s in LIST_SCENARIOS] if settings.nullcache else []
        runner.total_runs = n_conns * (1 + len(settings.scenarios) + len(list_scenarios))
        estimate = runner.total_runs * settings.duration + settings.warmup * (
            1 + len(settings.scenarios) + len(list_scenarios)
        )
        log(
            f"{runner.total_runs} runs of {settings.duration}s at connections {settings.connections}, "
            f"{settings.workers} gunicorn workers, {settings.threads} wrk thread(s); "
            f"about {estimate / 60:.1f} min of load plus set-up"
        )

        with Server("ceiling", base_env, settings.out, app_uri="bench.ceiling:app") as ceiling:
            runner.scenario(ceiling, "ceiling", "ceiling")

        migrate(base_env)
        pg_version = postgres_version(db_url)
        with Server("cache", base_env, settings.out) as service:
            dataset = seed(service.base_url)
            write_data_files(dataset, data_dir)
            for scenario in settings.scenarios:
                runner.scenario(service, "cache", scenario)

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
        "scenarios": {name: SCENARIOS.get(name, "bare WSGI, fixed 200-byte JSON") for name in ["ceiling", *SCENARIOS]},
        "runs": [r.as_dict() for r in results],
    }
    json_path = settings.out / "latest.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    render(results, settings, info)
    print(f"wrote {_show(json_path)}")
    print(f"total time {elapsed / 60:.1f} min")
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
    except BenchError as exc:
        log(f"error: {exc}")
        return 2
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
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
