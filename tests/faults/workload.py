"""The mixed write and read load of the outage fault tests, and the checks made after it.

Creators, updaters, favoriters and readers (anonymous reads the shared cache may answer, signed-in
reads that always reach PostgreSQL) on one replica; every write the API acknowledged is kept, then
checked against the database (`verify`). Used by the PostgreSQL restart and crash tests and the
PgBouncer restart test.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg2
from sqlalchemy import create_engine, text

from tests.faults.load import Client, Load, Result, sleep_unless

CREATORS = 3
UPDATERS = 3
FAVORITERS = 3
READERS = 6
FANS = 8
# Pass criteria from the fault plan (notes E.3 F6/F7).
MAX_LATENCY = 3.0
CLEAN_AFTER_RECOVERY = 2.0
Step = Callable[[Client], Result | None]
DB_WRITES = ("create", "update", "favorite")


@dataclass
class Writes:
    """Every write the API acknowledged, and the last update each updater attempted."""

    created: list[str] = field(default_factory=list)
    favorited: list[tuple[str, str]] = field(default_factory=list)  # (username, slug)
    acked_version: dict[str, int] = field(default_factory=dict)
    tried_version: dict[str, int] = field(default_factory=dict)
    updates: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReadyProbe:
    """Connects to `url` (PostgreSQL or PgBouncer) every 10 ms; notes when it first accepts again after being down."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.down_seen = False
        self.up_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set() and self.up_at is None:
            try:
                psycopg2.connect(self.url, connect_timeout=1).close()
                if self.down_seen:
                    self.up_at = time.monotonic()
            except psycopg2.OperationalError:
                self.down_seen = True
            time.sleep(0.01)

    def wait_up(self, timeout: float) -> float:
        """When the server accepted connections again; fails the test after `timeout` seconds without."""
        deadline = time.monotonic() + timeout
        while self.up_at is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.up_at is not None, f"the probe never saw {self.url.split('@')[-1]} accept connections again"
        return self.up_at

    def __enter__(self) -> ReadyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def mixed_load(base: str, tag: str) -> tuple[Load, Writes]:
    """Users and articles made through `base`, and a load (not started) of every role against it."""
    setup = Client(base)
    users: dict[str, str] = {}
    for name in [f"{tag}author"] + [f"{tag}fan{i}" for i in range(FANS)]:
        user = {"username": name, "email": f"{name}@example.com", "password": "password123"}
        reply = setup.call("POST", "/api/users", {"user": user})
        assert reply.status == 201, reply
        users[name] = reply.body["user"]["token"]
    author = users[f"{tag}author"]
    own: list[str] = []
    for i in range(UPDATERS + 8):
        article = {"title": f"{tag} seed {i}", "description": "d", "body": "v0"}
        reply = setup.call("POST", "/api/articles", {"article": article}, author)
        assert reply.status == 201, reply
        own.append(reply.body["article"]["slug"])
    setup.close()
    updated, favorite_targets = own[:UPDATERS], own[UPDATERS:]
    fans = [name for name in users if name != f"{tag}author"]
    pairs = deque((fan, slug) for fan in fans for slug in favorite_targets)
    random.Random(6).shuffle(pairs)
    writes = Writes(acked_version={s: 0 for s in updated}, tried_version={s: 0 for s in updated})
    load = Load()

    def creator(index: int) -> Step:
        counter = iter(range(10**9))

        def step(client: Client) -> Result:
            article = {"title": f"{tag} new {index} {next(counter)}", "description": "d", "body": "b"}
            result = client.request("create", "POST", "/api/articles", {"article": article}, author)
            if result.status == 201:
                with writes.lock:
                    writes.created.append(result.body["article"]["slug"])
            result.body = None
            sleep_unless(load, 0.02)
            return result

        return step

    def updater(slug: str) -> Step:
        counter = iter(range(1, 10**9))

        def step(client: Client) -> Result:
            n = next(counter)
            writes.tried_version[slug] = n
            result = client.request("update", "PUT", f"/api/articles/{slug}", {"article": {"body": f"v{n}"}}, author)
            if result.status == 200:
                writes.acked_version[slug] = n
                with writes.lock:
                    writes.updates += 1
            result.body = None
            sleep_unless(load, 0.02)
            return result

        return step

    def favoriter(client: Client) -> Result | None:
        try:
            fan, slug = pairs.popleft()
        except IndexError:
            sleep_unless(load, 0.05)
            return None
        result = client.request("favorite", "POST", f"/api/articles/{slug}/favorite", token=users[fan])
        if result.status == 200:
            with writes.lock:
                writes.favorited.append((fan, slug))
        result.body = None
        sleep_unless(load, 0.02)
        return result

    def reader(seed: int) -> Step:
        rng = random.Random(seed)

        def step(client: Client) -> Result:
            choice = rng.random()
            slug = rng.choice(own)
            if choice < 0.4:  # anonymous: the shared cache may answer without PostgreSQL
                result = client.request("read-cached", "GET", f"/api/articles/{slug}")
            elif choice < 0.7:
                result = client.request("read-cached", "GET", f"/api/articles?author={tag}author")
            else:  # signed in: the viewer's flags always come from PostgreSQL
                result = client.request("read-signed-in", "GET", f"/api/articles/{slug}", token=author)
            result.body = None
            return result

        return step

    for i in range(CREATORS):
        load.add(Client(base), creator(i))
    for slug in updated:
        load.add(Client(base), updater(slug))
    for _ in range(FAVORITERS):
        load.add(Client(base), favoriter)
    for i in range(READERS):
        load.add(Client(base), reader(i))

    return load, writes


def outage_figures(
    results: list[Result], down: float, up: float, writes: Writes, verified: int
) -> tuple[dict[str, Any], list[Result], float | None]:
    """(figures, errors later than CLEAN_AFTER_RECOVERY after `up`, first write success after `up`) of a run
    whose outage began at `down` and ended at `up` (time.monotonic())."""
    during = [r for r in results if down <= r.sent < up]
    before = [r.latency for r in results if r.sent < down]
    errors = [r for r in results if not 200 <= r.status < 300]
    statuses = Counter(r.status for r in results)
    late_errors = [r for r in errors if r.sent >= up + CLEAN_AFTER_RECOVERY]
    first_success = min(
        (r.sent + r.latency - up for r in results if r.sent >= up and r.kind in DB_WRITES and r.status < 300),
        default=None,
    )
    figures = {
        "requests": len(results),
        "requests_during_outage": len(during),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "5xx": sum(r.status >= 500 for r in results),
        "503": statuses[503],
        "503_without_retry_after": sum(r.status == 503 and not r.retry_after for r in results),
        "outage_s": round(up - down, 3),
        "p99_latency_before_outage_s": round(sorted(before)[int(len(before) * 0.99)], 3),
        "max_latency_s": round(max(r.latency for r in results), 3),
        "max_latency_during_outage_s": round(max((r.latency for r in during), default=0.0), 3),
        "cached_reads_200_during_outage": sum(r.kind == "read-cached" and r.status == 200 for r in during),
        "last_error_after_recovery_s": round(max((r.sent - up for r in errors), default=float("nan")), 3),
        "first_write_success_after_recovery_s": None if first_success is None else round(first_success, 3),
        "writes_acknowledged": len(writes.created) + len(writes.favorited) + writes.updates,
        "writes_verified": verified,
    }
    return figures, late_errors, first_success


def verify(database_url: str, writes: Writes) -> int:
    """Check every acknowledged write against the database; the number checked."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    try:
        with engine.connect() as conn:
            created = set(
                conn.execute(text("SELECT slug FROM articles WHERE slug = ANY(:s)"), {"s": writes.created}).scalars()
            )
            bodies = {
                row.slug: row.body
                for row in conn.execute(
                    text("SELECT slug, body FROM articles WHERE slug = ANY(:s)"), {"s": list(writes.acked_version)}
                )
            }
            favorites = {
                (row.username, row.slug)
                for row in conn.execute(
                    text(
                        "SELECT u.username, a.slug FROM favorites f"
                        " JOIN users u ON u.id = f.user_id JOIN articles a ON a.id = f.article_id"
                    )
                )
            }
            counts_off = conn.execute(
                text(
                    "SELECT count(*) FROM articles a WHERE a.favorites_count <>"
                    " (SELECT count(*) FROM favorites f WHERE f.article_id = a.id)"
                )
            ).scalar_one()
    finally:
        engine.dispose()
    assert set(writes.created) <= created, f"acknowledged creates lost: {set(writes.created) - created}"
    for slug, acked in writes.acked_version.items():
        # A write answered 503 may still have committed, so the body can be newer, never older.
        assert acked <= int(bodies[slug][1:]) <= writes.tried_version[slug], (slug, acked, bodies[slug])
    assert set(writes.favorited) <= favorites, f"acknowledged favorites lost: {set(writes.favorited) - favorites}"
    assert counts_off == 0, "favoritesCount differs from the favorite rows"
    # The last acknowledged update of each article being there covers the earlier ones.
    return len(writes.created) + len(writes.favorited) + writes.updates
