"""A real gunicorn + gevent server for tests that need one (e2e, fuzzing, concurrency), and a raw HTTP/1.1 client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import redis

from ops import launcher
from ops.launcher import free_port
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
        "ACCESS_LOG": "",
        "CACHE_KEY_PREFIX": f"test:{port}:{time.time_ns()}:",
        **env,
    }
    bin_dir = Path(sys.executable).parent
    subprocess.run([bin_dir / "flask", "--app", "service", "db", "upgrade"], env=environ, cwd=ROOT, check=True)
    # var/ is git-ignored: absent in a fresh clone; the launcher creates it
    started = launcher.start(environ, port, ROOT / "var" / f"gunicorn-{port}.log", workers=workers)
    try:
        with launcher.serving(started, timeout=30) as running:
            server = Server(running.url)
            server.proc, server.log_path = running.proc, running.log_path
            yield server
    finally:
        if environ.get("REDIS_URL"):
            with suppress(redis.RedisError):  # a Redis a test took down or hung: the TTLs clean up
                forget_keys(environ["REDIS_URL"], environ["CACHE_KEY_PREFIX"])


@dataclass
class Answer:
    """What a raw HTTP/1.1 client read back: status 0 and `error` when the transport hid the answer."""

    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes
    error: str = ""
    closed: bool = False  # the server closed the connection after the answer


def post_body(
    base: str, path: str, size: int, *, chunked: bool = False, close: bool = False, send: int | None = None
) -> Answer:
    """POST a `size`-byte body over a raw socket, the way a plain client does: send all of it (or only the
    first `send` bytes, then wait), then read the answer. Errors while sending are kept, not raised: a
    server that answered early may stop reading, and what counts is whether the answer can be read."""
    parts = urlsplit(base)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n{framing}\r\n"
        + ("Connection: close\r\n" if close else "")
        + "\r\n"
    )
    block = b"x" * 65536
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as sock:
        error = ""
        try:
            sock.sendall(head.encode())
            left = size if send is None else send
            while left > 0:
                piece = block[: min(left, len(block))]
                sock.sendall(b"%X\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
                left -= len(piece)
            if chunked and send is None:
                sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            error = f"while sending: {type(exc).__name__}: {exc}"
        return _read_answer(sock, error)


def _read_answer(sock: socket.socket, error: str) -> Answer:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(0, {}, data, error or "closed before an answer", closed=True)
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                return Answer(0, headers, body, "closed in the middle of the body", closed=True)
            body += chunk
        closed = False
        if headers.get("connection", "").lower() == "close":
            closed = sock.recv(1) == b""  # the server closes after an answer that says so
        return Answer(int(status_line.split(" ", 2)[1]), headers, body, error, closed)
    except OSError as exc:
        return Answer(0, {}, data, f"{error} then while reading: {type(exc).__name__}: {exc}".strip())
