"""`make bench` and `make tune` share a Redis with others: they delete their own keys, never a database."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
import redis

from bench import stores as bench


def test_the_bench_deletes_only_its_own_keys_at_start_and_at_the_end(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("the benchmark flushed a Redis database")

    monkeypatch.setattr(redis.Redis, "flushdb", refuse)
    monkeypatch.setattr(redis.Redis, "flushall", refuse)
    client = redis.Redis.from_url(redis_url)
    prefix = bench.key_prefix()
    sentinel = f"test:sentinel:{secrets.token_hex(4)}"
    neighbour = f"{prefix.rstrip(':')}0:g:epoch"  # another run's pid that starts with this one's
    stats = bench.RedisStats(redis_url)
    try:
        client.set(sentinel, "keep")
        client.set(neighbour, "keep")
        client.set(prefix + "leftover", "from a crashed run")
        with bench.own_keys(stats, prefix) as own:
            assert own == prefix
            assert client.get(prefix + "leftover") is None  # cleared at start
            pipe = client.pipeline(transaction=False)
            for i in range(2500):  # more than one SCAN / DEL batch
                pipe.set(f"{own}a:{i}", b"=cached")
            pipe.execute()
        assert not list(client.scan_iter(match=prefix + "*", count=1000))
        assert client.get(sentinel) == b"keep"
        assert client.get(neighbour) == b"keep"
    finally:
        client.delete(sentinel, neighbour, prefix + "leftover")
        stats.forget(prefix)
        stats.close()
        client.close()


def test_the_bench_refuses_a_prefix_that_would_match_other_keys(redis_url: str) -> None:
    stats = bench.RedisStats(redis_url)
    try:
        for prefix in ("", "conduit:*", "conduit:[ab]:"):
            with pytest.raises(bench.BenchError):
                stats.forget(prefix)
    finally:
        stats.close()
