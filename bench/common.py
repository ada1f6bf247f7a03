"""What every part of the benchmark shares: paths, scenario names, settings, errors, the log line."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

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
    "anon_list_gzip": "GET /api/articles (Accept-Encoding: gzip)",
    "auth_list": "GET /api/articles (auth)",
    "article": "GET /api/articles/<slug>",
    "profile": "GET /api/profiles/<username>",
    "tags": "GET /api/tags",
    "feed": "GET /api/articles/feed (auth)",
    "comment_write": "POST /api/articles/<slug>/comments (auth)",
    "mix": "90% reads / 10% writes",
}
LIST_SCENARIOS = ("anon_list", "anon_list_page40", "auth_list", "feed")


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why and what to do."""


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


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
    haproxy: bool = False  # also run every scenario through HAProxy (bench/haproxy.py)
