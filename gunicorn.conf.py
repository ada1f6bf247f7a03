"""gunicorn settings, written for the person on call.

Every knob reads an environment variable, so ops can tune a replica without
editing this file. Units and sane ranges are in the comments.
"""

import glob
import logging
import mmap
import os
import shutil
import tempfile

wsgi_app = "service:create_app()"

# Where to listen. BIND wins; otherwise PORT on all interfaces of the host...
# except by default, where only loopback is served (a dev box stays private).
bind = [os.environ.get("BIND") or f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"]

# gevent: one worker process serves many requests concurrently while they wait
# on PostgreSQL, Redis or the client. psycopg2 is made cooperative per worker in
# create_app (service/storage/green.py). gunicorn's gevent worker plus a lame-duck period
# and a drain that closes idle keep-alive connections (service/runtime/worker.py).
worker_class = "service.runtime.worker.GeventWorker"

# Worker processes (1 - 2x cores). CPU-bound Python work (JSON, routing) runs
# one request at a time per process, so about one worker per core; measure.
# Without REDIS_URL the default is 1: the in-process cache is per process.
workers = int(os.environ.get("WEB_CONCURRENCY") or ((os.cpu_count() or 1) if os.environ.get("REDIS_URL") else 1))

# Several workers cannot share an in-process cache: one worker would keep
# serving what another has just changed. Without Redis they run uncached.
if workers > 1 and not os.environ.get("REDIS_URL") and os.environ.get("CACHE_TYPE", "SimpleCache") == "SimpleCache":
    os.environ["CACHE_TYPE"] = "NullCache"

# Greenlets per worker = concurrent connections it holds, idle keep-alive
# connections included (100-5000). Keep it well above the load balancer's
# per-server maxconn divided by workers.
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "1000"))

# Seconds an idle keep-alive connection stays open (2-120). Behind a proxy it
# must outlive the proxy's own idle timeout, or requests race with the close.
keepalive = int(os.environ.get("KEEPALIVE", "75"))

# Seconds of silence from a worker before the master kills it (10-120). The
# gevent worker heartbeats from a greenlet, so this only fires when the event
# loop itself is blocked: a last-resort detector, not a request timeout.
timeout = int(os.environ.get("WORKER_TIMEOUT", "30"))

# Seconds a worker gets to finish in-flight requests after SIGTERM (5-60).
# Keep it below the orchestrator's stop timeout.
graceful_timeout = int(os.environ.get("GRACEFUL_TIMEOUT", "25"))

# Seconds a worker keeps serving after SIGTERM while /healthz and /readyz answer
# 503 (0 - GRACEFUL_TIMEOUT-2), so the load balancer's health check takes the
# replica out before it stops accepting. Behind HAProxy with `inter 1s fall 2`
# use 3; 0 (a dev box) stops accepting at once. Counts within GRACEFUL_TIMEOUT.
shutdown_delay = float(os.environ.get("SHUTDOWN_DELAY", "0"))
if not 0 <= shutdown_delay <= graceful_timeout - 2:
    raise ValueError(
        f"SHUTDOWN_DELAY={shutdown_delay:g} must be between 0 and GRACEFUL_TIMEOUT-2 ({graceful_timeout - 2})"
    )

# Requests one worker handles at once (0 = no cap; 4-64). Each worker already
# serves its ready connections in turn (one yield per request); a cap makes the
# rest wait in arrival order instead of sharing the CPU, so a burst finishes
# oldest-first. Counts requests, not connections (idle keep-alive ones are free).
# Off by default: no gain measured yet (bench/recorded/2026-11-29-fairness.md).
max_inflight = int(os.environ.get("MAX_INFLIGHT", "0"))
if max_inflight < 0:
    raise ValueError(f"MAX_INFLIGHT={max_inflight} must be 0 (no cap) or more")

# Pending connections the kernel queues per listener (64-4096).
backlog = int(os.environ.get("BACKLOG", "2048"))

# Never preload with gevent: importing the app in the master, before the
# worker monkey-patches, breaks ssl/socket patching and leaks connections
# across the fork.
preload_app = False

# Request limits are part of the attack surface; these are gunicorn's defaults
# stated explicitly: request line bytes, header count, header field bytes.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190

# gunicorn >= 25 opens a control socket in $HOME by default; containers often
# have a read-only home, and nothing here uses it.
control_socket_disable = True

# Trust X-Forwarded-* only from these proxy addresses (comma-separated, CIDR ok).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")

# Logs are JSON lines (service/runtime/logs.py): gunicorn's messages and the app's on
# stderr, and the app's access line per request (request id, route, status,
# duration, client, user) where ACCESS_LOG says: "-" stdout (default), a file
# path (reopened when logrotate moves it), or empty for none. gunicorn's own
# plain-text access log is off: the app's line replaces it.
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
errorlog = "-"
accesslog = None
_access_log = os.environ.get("ACCESS_LOG", "-")
_access_handler = (
    {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    if _access_log == "-"
    else {"class": "logging.handlers.WatchedFileHandler", "formatter": "json", "filename": _access_log}
)
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "service.runtime.logs.JsonFormatter"}},
    "handlers": {
        "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        **({"access": _access_handler} if _access_log else {}),
    },
    "root": {"level": loglevel.upper(), "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
        "service.access": {
            "level": "INFO" if _access_log else "CRITICAL",
            "handlers": ["access"] if _access_log else [],
            "propagate": False,
        },
    },
}
logging.captureWarnings(True)  # Python warnings become JSON lines too
# Cheaper records (Logging HOWTO, "Optimization"): no caller frame lookup, thread
# or multiprocessing names; the JSON lines do not use them. The pid stays.
logging._srcfile = None
logging.logThreads = False
logging.logMultiprocessing = False

# gevent's monitor thread (GEVENT_MONITOR_THREAD_ENABLE=1, threshold
# GEVENT_MAX_BLOCKING_TIME seconds, default 0.1) counts a blocked event loop in
# conduit_event_loop_blocked_total and logs one JSON line with the blocking
# stack; its own multi-line report to stderr is off unless asked for.
os.environ.setdefault("GEVENT_MONITOR_PRINT_BLOCKING_REPORTS", "false")


def _prometheus_dir() -> str:
    """PROMETHEUS_MULTIPROC_DIR for the workers, prepared in the master before they fork.

    The operator's directory (created, its *.db files wiped) or a fresh temporary
    one (removed at exit). A config reload (HUP) keeps the current one: live
    workers still write to it. A new master started from this one (USR2) gets its own.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.environ.get("_CONDUIT_PROMETHEUS_DIR") == f"{os.getpid()}:{path}":
        return path
    if path and os.environ.get("_CONDUIT_PROMETHEUS_TMP") != path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        # Left behind by masters that were SIGKILLed (no on_exit): their pid is in the name.
        for stale in glob.glob(os.path.join(tempfile.gettempdir(), "conduit-metrics-*-*")):
            try:
                os.kill(int(os.path.basename(stale).split("-")[2]), 0)
            except ProcessLookupError:
                shutil.rmtree(stale, ignore_errors=True)
            except (ValueError, PermissionError):
                pass
        path = tempfile.mkdtemp(prefix=f"conduit-metrics-{os.getpid()}-")
        os.environ["_CONDUIT_PROMETHEUS_TMP"] = path
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    os.environ["_CONDUIT_PROMETHEUS_DIR"] = f"{os.getpid()}:{path}"
    return path


# Metrics from every worker (service/runtime/metrics.py): set before anything imports
# prometheus_client, which reads the variable once at import.
prometheus_dir = _prometheus_dir()


def on_starting(server):
    # One byte shared with the workers, set when the master is told to stop (SIGTERM):
    # then each worker serves its lame duck (SHUTDOWN_DELAY). A worker stopped on its
    # own (HUP reload, TTOU) stops accepting at once and the replica stays in the pool.
    # Kept on the arbiter: a reload (HUP) runs this file again, but not this hook.
    stopping = server.conduit_replica_stopping = mmap.mmap(-1, 1)
    handle_term = server.handle_term

    def handle_term_of_the_replica():
        stopping[0] = 1
        handle_term()

    server.handle_term = handle_term_of_the_replica


def post_fork(server, worker):
    worker.shutdown_delay = shutdown_delay
    worker.max_inflight = max_inflight
    stopping = server.conduit_replica_stopping
    worker.replica_stopping = lambda: stopping[0] == 1


# After each worker has loaded the app (preload_app is off), move every object
# alive then (modules, routes, compiled schemas: some 100k) into the permanent
# generation with gc.freeze(), so later full collections do not walk them again.
# 1 on, 0 off (default: no p99 gain measured, bench/recorded/2026-11-29-fairness.md).
gc_freeze = os.environ.get("GC_FREEZE", "0") == "1"


def post_worker_init(worker):
    if gc_freeze:
        import gc

        gc.collect()
        gc.freeze()


def child_exit(server, worker):
    # Drops the dead worker's live gauges (pool connections in use); its counters stay in the sums.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, prometheus_dir)


def on_exit(server):
    if os.environ.get("_CONDUIT_PROMETHEUS_TMP") == prometheus_dir:
        shutil.rmtree(prometheus_dir, ignore_errors=True)
