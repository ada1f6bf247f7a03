"""Closed-loop HTTP load for failover and fault tests: keep-alive clients on threads, every outcome kept.

Each client is an OS thread holding one HTTP/1.1 keep-alive connection (like a browser or wrk) and
running a scenario function in a loop. A transport error (refused, reset, timeout, or the silent
close HAProxy does when it cannot answer a request on a reused connection) is recorded with status 0
and counts as a failure: it is exactly what a real client sees. So does a truncated body (the status
line and headers arrived, then fewer body bytes than Content-Length or the chunked framing announced,
and the connection closed): it is recorded with status 0 and `truncated` set. Nothing is retried here, so a failure
the proxy or the service should have hidden is never hidden by the harness.

    def step(client: Client, rng: random.Random) -> None:
        client.request("GET", "/api/articles", kind="list")

    with Load(base, step, clients=24) as load:
        ...  # inject the fault
    print(load.report.summary())
    assert load.report.failed() == []
"""

from __future__ import annotations

import http.client
import json as jsonlib
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

OK = range(200, 400)


@dataclass(frozen=True)
class Outcome:
    kind: str
    method: str
    status: int  # 0 = transport error
    ok: bool
    started: float  # time.monotonic() when the request was sent
    elapsed: float
    error: str = ""
    truncated: bool = False  # headers received, body cut short


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.body)


class TruncatedBody(http.client.HTTPException):
    """The head of a response arrived, then the connection closed before the whole body did."""

    def __init__(self, status: int, received: int, expected: int | None) -> None:
        rest = f"of {received + expected}" if expected is not None else "of more"
        super().__init__(f"truncated body: status {status} received, then {received} body bytes {rest}")


def read_body(resp: http.client.HTTPResponse, method: str) -> bytes:
    """The whole body of `resp` (an answer to `method`); TruncatedBody when the connection closed before it ended."""
    try:
        body = resp.read()
    except http.client.IncompleteRead as exc:
        raise TruncatedBody(resp.status, len(exc.partial), exc.expected) from exc
    length = resp.getheader("content-length")
    no_body = method == "HEAD" or resp.status in (204, 304)
    if length is not None and length.isdigit() and not no_body and len(body) != int(length):
        raise TruncatedBody(resp.status, len(body), int(length) - len(body))
    return body


class Client:
    """One keep-alive connection; reconnects on the next request after a transport error or a close."""

    def __init__(self, base_url: str, timeout: float = 10.0, record: Callable[[Outcome], None] | None = None):
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.timeout = timeout
        self.record = record
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        kind: str | None = None,
        json: Any = None,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
        expect: Collection[int] = OK,
    ) -> Response:
        """Send one request; status 0 in the returned Response means the transport failed."""
        head = {"Accept": "application/json", **(headers or {})}
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            head["Content-Type"] = "application/json"
        if token:
            head["Authorization"] = f"Token {token}"
        started = time.monotonic()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.request(method, path, body=body, headers=head)
            resp = self.conn.getresponse()
            response = Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, read_body(resp, method))
            if resp.will_close:
                self.close()
            error = ""
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            response, error = Response(0, {}, b""), f"{type(exc).__name__}: {exc}"
        if self.record is not None:
            ok = response.status in expect
            truncated = error.startswith(TruncatedBody.__name__)
            elapsed = time.monotonic() - started
            self.record(Outcome(kind or method, method, response.status, ok, started, elapsed, error, truncated))
        return response


@dataclass
class Report:
    outcomes: list[Outcome] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)  # scenario exceptions (a bug in the test, or a bad body)
    duration: float = 0.0

    def failed(self, kinds: Collection[str] | None = None) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok and (kinds is None or o.kind in kinds)]

    def truncated(self) -> list[Outcome]:
        """Responses whose head arrived and whose body was cut short (each also counts as failed)."""
        return [o for o in self.outcomes if o.truncated]

    def counts(self) -> dict[str, Counter[str]]:
        """kind -> Counter(sent, ok, failed, and one entry per failing status)."""
        table: dict[str, Counter[str]] = {}
        for o in self.outcomes:
            row = table.setdefault(o.kind, Counter())
            row["sent"] += 1
            row["ok" if o.ok else "failed"] += 1
            if not o.ok:
                row["status 0, truncated body" if o.truncated else f"status {o.status}"] += 1
        return table

    def summary(self) -> str:
        lines = [f"{'kind':<22}{'sent':>8}{'ok':>8}{'failed':>8}  failing statuses"]
        for kind, row in sorted(self.counts().items()):
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row.items()) if k.startswith("status"))
            lines.append(f"{kind:<22}{row['sent']:>8}{row['ok']:>8}{row['failed']:>8}  {statuses}")
        total = len(self.outcomes)
        rate = total / self.duration if self.duration else 0.0
        lines.append(
            f"{'total':<22}{total:>8}{total - len(self.failed()):>8}{len(self.failed()):>8}  ({rate:.0f} req/s)"
        )
        lines += [f"scenario error: {c}" for c in self.crashes[:5]]
        return "\n".join(lines)


class Load:
    """`clients` threads, each looping `scenario(client, rng)` until stopped; a context manager."""

    def __init__(
        self,
        base_url: str,
        scenario: Callable[[Client, random.Random], None],
        clients: int = 32,
        seed: int = 0,
        timeout: float = 10.0,
    ) -> None:
        self.base_url, self.scenario, self.timeout = base_url, scenario, timeout
        self.report = Report()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(random.Random(seed * 1000 + i),), daemon=True)
            for i in range(clients)
        ]
        self._started = 0.0

    def _record(self, outcome: Outcome) -> None:
        with self._lock:
            self.report.outcomes.append(outcome)

    def _run(self, rng: random.Random) -> None:
        client = Client(self.base_url, self.timeout, self._record)
        try:
            while not self._stop.is_set():
                try:
                    self.scenario(client, rng)
                except Exception as exc:  # keep loading; the test asserts on crashes
                    with self._lock:
                        self.report.crashes.append(f"{type(exc).__name__}: {exc}")
                    time.sleep(0.01)
        finally:
            client.close()

    def start(self) -> Load:
        self._started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Report:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        self.report.duration = time.monotonic() - self._started
        return self.report

    def sent(self) -> int:
        with self._lock:
            return len(self.report.outcomes)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
