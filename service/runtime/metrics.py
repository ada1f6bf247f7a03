"""Prometheus metrics, correct across gunicorn worker processes.

Under gunicorn, `gunicorn.conf.py` points PROMETHEUS_MULTIPROC_DIR at a wiped
directory before the workers fork: every worker writes its values to its own
memory-mapped files there, and `/metrics`, answered by whichever worker, sums
them (gauges of dead workers are dropped by the `child_exit` hook). Without that
variable (Flask test client, `flask run`) the values live in this process's
ordinary registry.

Metric objects are module globals, as prometheus-client expects; they are
created when the app first imports this module (in the worker, after fork).
"""

from __future__ import annotations

import atexit
import bisect
import glob
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent
from flask import Flask, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess
from sqlalchemy import event

from service.runtime.logs import current_request, elapsed, endpoint_label

if TYPE_CHECKING:
    from service.storage.db import Database

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry(auto_describe=True)

# Seconds. A cached read answers in ~1 ms, an uncached list in ~5-20 ms; the
# upper buckets show pool waits (DB_POOL_TIMEOUT 2 s) and statement timeouts (5 s).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "conduit_http_requests",
    "HTTP requests answered, by route template (never the raw path), method and status.",
    ["endpoint", "method", "status"],
    registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "conduit_http_request_duration_seconds",
    "Time from the app receiving a request to its response being ready, by route template, method and status.",
    ["endpoint", "method", "status"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
CACHE_EVENTS = {
    name: Counter(f"conduit_cache_{name}", help_text, registry=REGISTRY)
    for name, help_text in (
        ("hits", "Shared-cache reads that found a value."),
        ("misses", "Shared-cache reads that found nothing (the database answered)."),
        ("errors", "Redis calls that failed or timed out (each opens the breaker for CACHE_BREAKER_SECONDS)."),
        ("bump_failures", "Invalidations (generation bumps) that could not reach Redis and were kept for a retry."),
        ("pool_busy", "Reads shed with a 503 because every Redis connection of the worker was busy."),
        ("fill_waits", "Misses that waited for another worker's or replica's load of the same entry."),
        ("fastpath", "Cache hits answered ahead of the framework (anonymous reads; also counted in hits)."),
    )
}
DB_IN_USE = Gauge(
    "conduit_db_connections_in_use",
    "Database connections checked out of the pool right now, summed over live workers.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_WAITING = Gauge(
    "conduit_db_requests_waiting",
    "Requests waiting for a database connection right now (pool exhausted or connecting), over live workers.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
DB_CAPACITY = Gauge(
    "conduit_db_pool_max_connections",
    "Most connections the pool may open (size + overflow), summed over live workers.",
    ["pool"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
# Labelled so that nothing is written until a worker sets it (an unlabelled gauge creates its
# file at import, before the worker's other gauges are set).
REDIS_PARSER_WORKERS = Gauge(
    "conduit_redis_parser_workers",
    "Live workers by the parser their Redis client uses; only parser=python (hiredis >= 3.2 missing) is set.",
    ["parser"],
    multiprocess_mode="livesum",
    registry=REGISTRY,
)
EVENT_LOOP_BLOCKED = Counter(
    "conduit_event_loop_blocked",
    "Times gevent's monitor thread found a worker's event loop blocked for more than GEVENT_MAX_BLOCKING_TIME "
    "(only counted with GEVENT_MONITOR_THREAD_ENABLE=1).",
    registry=REGISTRY,
)
DB_READS = Counter(
    "conduit_db_reads",
    "Reads by the database that served them, with read replicas configured (primary, replica0, replica1, ...).",
    ["database"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "conduit_rate_limited",
    "Requests refused by a rate limit, by limit scope.",
    ["scope"],
    registry=REGISTRY,
)

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Seconds between writes of a worker's request and cache counts to the shared values.
FLUSH_SECONDS = 1.0
_BOUNDS = (*LATENCY_BUCKETS, float("inf"))


class _Counts:
    """This process's request and cache counts since the last flush, in plain Python.

    Writing a prometheus-client value costs a lock, a getpid() and a write to the
    memory-mapped file (about 2 us in multiprocess mode; a request makes 4). Here a
    request costs a few dict operations, and the sums are written at most once per
    FLUSH_SECONDS (by the request that finds the time up, by a greenlet in gevent
    workers, before every scrape, and at exit), so scrapes lag a worker by <= 1 s.
    """

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], list[Any]] = {}
        self.cache: dict[str, int] = {}
        self.flushed = time.monotonic()

    def flush(self) -> None:
        requests, self.requests = self.requests, {}
        cache, self.cache = self.cache, {}
        self.flushed = time.monotonic()
        for (endpoint, method, status), (count, total, buckets) in requests.items():
            labels = (endpoint, method, str(status))
            HTTP_REQUESTS.labels(*labels).inc(count)
            histogram = HTTP_LATENCY.labels(*labels)
            # prometheus-client 0.26 keeps a histogram child's sum and per-bucket (not cumulative)
            # counts in these; Histogram.observe() can only add one observation at a time.
            histogram._sum.inc(total)
            for index, hits in enumerate(buckets):
                if hits:
                    histogram._buckets[index].inc(hits)
        for name, count in cache.items():
            CACHE_EVENTS[name].inc(count)


_counts = _Counts()
atexit.register(_counts.flush)


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request. `endpoint` must be a route template, never a raw path."""
    if method not in KNOWN_METHODS:  # the method is client input: bound the label values
        method = "other"
    key = (endpoint, method, status)
    entry = _counts.requests.get(key)
    if entry is None:
        entry = _counts.requests[key] = [0, 0.0, [0] * len(_BOUNDS)]
    entry[0] += 1
    entry[1] += seconds
    entry[2][bisect.bisect_left(_BOUNDS, seconds)] += 1
    if time.monotonic() - _counts.flushed >= FLUSH_SECONDS:
        _counts.flush()


def count_cache(name: str) -> None:
    """One cache event; `name` is a key of SharedCache.stats (hits, misses, errors, bump_failures, ...)."""
    _counts.cache[name] = _counts.cache.get(name, 0) + 1


def flush() -> None:
    """Write this process's pending counts now (before a scrape; tests)."""
    _counts.flush()


def _flush_periodically() -> None:
    while True:
        gevent.sleep(FLUSH_SECONDS)
        if _counts.requests or _counts.cache:
            try:
                _counts.flush()
            except Exception:
                log.exception("writing the request and cache counts failed")


def record_rate_limited(scope: str) -> None:
    """Count one request refused by the rate limit `scope` (a fixed name such as "login", never client input)."""
    RATE_LIMITED.labels(scope).inc()


def instrument_database(database: Database) -> None:
    """Keep the pool gauges of `database` current through SQLAlchemy pool events."""
    pools = {database.engine: "write", database.reader: "read"} if len(database.engines) > 1 else None
    for engine in database.engines:
        name = pools[engine] if pools else "main"
        in_use = DB_IN_USE.labels(name)
        # After db.py's own checkout listener: one that raises makes the pool retry, and
        # the retry would be counted twice.
        event.listen(engine, "checkout", _inc(in_use))
        event.listen(engine, "checkin", _dec(in_use))
        pool: Any = engine.pool
        DB_CAPACITY.labels(name).set(pool.size() + max(getattr(pool, "_max_overflow", 0), 0))
        database.waiting[engine] = DB_WAITING.labels(name)
    if pools is None:
        database.waiting[database.reader] = database.waiting[database.engine]
    if database.replicas is not None:
        database.on_read = _count_read


def _count_read(database: str) -> None:
    DB_READS.labels(database).inc()


def _inc(gauge: Any) -> Callable[..., None]:
    def listener(*_args: Any) -> None:
        gauge.inc()

    return listener


def _dec(gauge: Any) -> Callable[..., None]:
    def listener(*_args: Any) -> None:
        gauge.dec()

    return listener


def count_blocked_event_loop() -> None:
    """Count gevent's EventLoopBlocked events and log each as one line (instead of gevent's multi-line report).

    The event is emitted in gevent's monitor thread while the hub is blocked; the
    counting and logging are handed to the hub's thread (they take gevent locks),
    where they run as soon as the loop moves again.
    """
    import zope.event
    from gevent.events import EventLoopBlocked

    def on_event(evt: object) -> None:
        if isinstance(evt, EventLoopBlocked) and evt.hub is not None:
            evt.hub.loop.run_callback_threadsafe(_blocked, evt.blocking_time, list(evt.info))

    if not any(getattr(s, "__name__", "") == "on_event" and s.__module__ == __name__ for s in zope.event.subscribers):
        zope.event.subscribers.append(on_event)


def _blocked(threshold: float, report: list[str]) -> None:
    EVENT_LOOP_BLOCKED.inc()
    # The report's first part is the blocking greenlet's stack; the rest is the
    # whole greenlet tree (one line per connection), too long for a log line.
    stack = report[1 : report.index("Info:")] if "Info:" in report else report[:40]
    log.warning("event loop blocked for more than %.3fs", threshold, extra={"fields": {"report": "\n".join(stack)}})


def multiprocess_dir() -> str | None:
    """The multiprocess directory prometheus-client writes to in this process, if any."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _SizedFilesCollector(prometheus_multiprocess.MultiProcessCollector):
    """The multiprocess collector, minus files that a booting worker has created but not sized yet.

    prometheus-client creates a worker's file empty and then grows it; a scrape that
    reads it in between fails with struct.error. Such a file holds no sample yet.
    """

    def collect(self) -> Any:
        files = glob.glob(os.path.join(self._path, "*.db"))
        return self.merge([f for f in files if _size(f) >= 8], accumulate=True)  # type: ignore[no-untyped-call]


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # a dead worker's file removed meanwhile
        return 0


def exposition() -> bytes:
    """Every metric in the Prometheus text format, summed over the live workers in multiprocess mode."""
    flush()
    if multiprocess_dir():
        registry = CollectorRegistry()
        _SizedFilesCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def _observe(resp: Response) -> Response:
    req = current_request()
    observe_request(endpoint_label(req), req.method, resp.status_code, elapsed(req))
    return resp


_flusher: list[Any] = []  # [greenlet, pid] of this process's periodic flush


def init_app(app: Flask) -> None:
    """Request metrics (register before other after_request hooks, like logs.init_app) and blocked-loop counting."""
    app.after_request(_observe)
    count_blocked_event_loop()
    if _gevent_worker() and (not _flusher or _flusher[1] != os.getpid()):
        _flusher[:] = [gevent.spawn(_flush_periodically), os.getpid()]


def _gevent_worker() -> bool:
    from gevent import monkey

    return bool(monkey.is_module_patched("socket"))
