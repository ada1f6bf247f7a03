"""Closed-loop load with roles and worker pinning, for fault tests.

The HTTP side is tests.loadgen's keep-alive client. What fault tests add:
each client thread runs its own step (writer, reader, ...), and
`pinned_clients` finds which gunicorn worker (pid) holds each connection
from /proc, so a test can put writers on one worker and readers on all.
Every request is recorded with its send time, latency, status, worker and
Retry-After; a transport error is status 0.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests import loadgen


@dataclass
class Result:
    kind: str
    status: int  # 0 = the connection failed (reset, timeout, refused)
    sent: float  # time.monotonic() when the request was sent
    latency: float  # seconds until the whole response was read
    worker: int | None
    retry_after: str | None = None
    body: Any = None


class Client:
    """One keep-alive connection (tests.loadgen.Client) that also knows which worker serves it."""

    def __init__(self, base: str, timeout: float = 15) -> None:
        self.http = loadgen.Client(base, timeout)
        self.worker: int | None = None
        self._conn: object = None

    def close(self) -> None:
        self.http.close()

    def request(self, kind: str, method: str, path: str, payload: Any = None, token: str | None = None) -> Result:
        sent = time.monotonic()
        resp = self.http.request(method, path, kind=kind, json=payload, token=token)
        latency = time.monotonic() - sent
        conn = self.http.conn
        if conn is not self._conn:  # a new connection may have landed on another worker
            self._conn = conn
            sock = getattr(conn, "sock", None)
            self.worker = server_pid(self.http.port, sock.getsockname()[1]) if sock is not None else None
        body = (
            resp.json() if resp.body and resp.headers.get("content-type", "").startswith("application/json") else None
        )
        return Result(kind, resp.status, sent, latency, self.worker, resp.headers.get("retry-after"), body)

    def call(self, method: str, path: str, payload: Any = None, token: str | None = None) -> Result:
        return self.request(f"{method} {path}", method, path, payload, token)


def _socket_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the server side of the TCP connection from `client_port` to `server_port`."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = open(table).read().splitlines()[1:]  # noqa: SIM115 - /proc read at once
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = fields[1], fields[2]
            if int(local.rsplit(":", 1)[1], 16) == server_port and int(remote.rsplit(":", 1)[1], 16) == client_port:
                return fields[9]
    return None


def server_pid(server_port: int, client_port: int) -> int | None:
    """The pid of the gunicorn worker that accepted the connection from `client_port` (Linux /proc)."""
    inode = _socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"gunicorn" not in f.read():
                    continue
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return int(pid)
            except OSError:
                continue
    return None


def pinned_clients(base: str, per_worker: int, workers: int, attempts: int = 400) -> dict[int, list[Client]]:
    """`per_worker` open clients on each of `workers` worker processes, keyed by worker pid."""
    found: dict[int, list[Client]] = {}
    for _ in range(attempts):
        if len(found) == workers and all(len(c) >= per_worker for c in found.values()):
            return found
        client = Client(base)
        result = client.call("GET", "/healthz")
        assert result.status == 200, result
        if client.worker is None:
            client.close()
            continue
        clients = found.setdefault(client.worker, [])
        if len(clients) < per_worker:
            clients.append(client)
        else:
            client.close()
    raise AssertionError(f"could not open {per_worker} connections on each of {workers} workers: {found}")


class Load:
    """Client threads that loop on their task until `stop()`; every result is kept."""

    def __init__(self) -> None:
        self.results: list[Result] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._clients: list[Client] = []

    def add(self, client: Client, step: Callable[[Client], list[Result] | Result | None]) -> None:
        """Run `step(client)` in a loop on its own thread; it returns what it recorded."""

        def loop() -> None:
            try:
                while not self._stop.is_set():
                    recorded = step(client)
                    if isinstance(recorded, Result):
                        self.results.append(recorded)
                    elif recorded:
                        self.results.extend(recorded)
            except BaseException as exc:  # reported by stop(), never lost in a thread
                self.errors.append(exc)

        self._clients.append(client)
        self._threads.append(threading.Thread(target=loop, daemon=True))

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30) -> None:
        """Stop every client and close its connection (an idle keep-alive connection would hold
        a stopping gunicorn worker for its whole graceful timeout)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        for client in self._clients:
            client.close()
        assert not any(t.is_alive() for t in self._threads), "a client thread did not stop"
        if self.errors:
            raise self.errors[0]


def sleep_unless(load: Load, seconds: float) -> None:
    """A short pause inside a step that ends early when the load stops."""
    deadline = time.monotonic() + seconds
    while not load.stopped and time.monotonic() < deadline:
        time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
