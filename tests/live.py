"""A real gunicorn + gevent server for tests that need one (e2e, fuzzing, concurrency)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import redis

from tests.conftest import forget_keys

ROOT = Path(__file__).resolve().parent.parent


class Server(str):
    """The base URL of a live server (a str, so callers can use it as one), its gunicorn master and log."""

    proc: subprocess.Popen[bytes]
    log_path: Path


def server_stack(server: Server) -> tuple[str, int]:
    """What a live server runs on: its Redis state from /readyz ("ok", "not configured", ...) and
    how many workers its master has."""
    with urllib.request.urlopen(server + "/readyz", timeout=10) as resp:
        redis_state = str(json.load(resp)["redis"])
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return redis_state, len(children)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(database_url: str, workers: int = 2, **env: str) -> Iterator[Server]:
    """Migrate `database_url`, start gunicorn on a free port, yield its base URL, stop it.

    `env` overrides the inherited environment (REDIS_URL="" for the in-process cache). The cache
    keys go under a prefix of this server alone; with Redis they are deleted once it stopped.
    """
    port = free_port()
    environ = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "ACCESS_LOG": "",
        "CACHE_KEY_PREFIX": f"test:{port}:{time.time_ns()}:",
        **env,
    }
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "flask", "--app", "service", "db", "upgrade"], env=environ, cwd=ROOT, check=True)
    (ROOT / "var").mkdir(exist_ok=True)  # var/ is git-ignored: absent in a fresh clone
    log = open(ROOT / "var" / f"gunicorn-{port}.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [bin_dir / "gunicorn", "-c", "gunicorn.conf.py"], env=environ, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gunicorn did not start; see {log.name}") from None
                time.sleep(0.1)
        server = Server(base)
        server.proc, server.log_path = proc, Path(log.name)
        yield server
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if environ.get("REDIS_URL"):
            with suppress(redis.RedisError):  # a Redis a test took down or hung: the TTLs clean up
                forget_keys(environ["REDIS_URL"], environ["CACHE_KEY_PREFIX"])
