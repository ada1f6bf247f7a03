"""The deterministic dataset, seeded through the public API (random.Random(SEED), 16 threads)."""

from __future__ import annotations

import http.client
import json
import random
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import BenchError, log

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
