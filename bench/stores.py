"""The benchmark's own PostgreSQL database and its own keys in a shared Redis, both removed at the end."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from bench.common import BenchError, log


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
