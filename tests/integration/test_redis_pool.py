"""Redis commands through the service's pools do not yield to the gevent hub.

redis-py 8's hiredis parser probes every connection it checks out of a pool with
select.poll(); in a gunicorn gevent worker that poll is gevent's, which waits on
the hub even with a zero timeout: two greenlet switches per command, and the
request goes to the back of the run queue before it has sent anything.
"""

from __future__ import annotations

import logging
import select
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent.select
import greenlet
import pytest

from service.caching import cache
from service.caching.cache import _redis_client
from service.runtime import metrics
from service.storage import redis_pool
from tests.conftest import build_app


@pytest.fixture
def gevent_poll(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """select.poll as a gunicorn gevent worker has it (monkey.patch_all)."""
    monkeypatch.setattr(select, "poll", gevent.select.poll)
    yield


def _switches(call: Any) -> int:
    seen: list[str] = []

    def trace(event: str, _args: Any) -> None:
        seen.append(event)

    previous = greenlet.settrace(trace)
    try:
        call()
    finally:
        greenlet.settrace(previous)
    return sum(1 for event in seen if event in ("switch", "throw"))


def test_hiredis_is_installed_and_used_by_redis_py() -> None:
    assert redis_pool.HIREDIS_AVAILABLE, "hiredis >= 3.2 is missing: redis-py falls back to its Python parser"


def test_a_cache_get_through_the_pool_does_not_switch_greenlets(redis_url: str, gevent_poll: None) -> None:
    cfg = {"REDIS_URL": redis_url, "CACHE_SOCKET_TIMEOUT": 1.0}
    client = _redis_client(cfg, 4, 1.0)
    key = f"test-parser-{uuid.uuid4().hex}"
    try:
        client.set(key, b"x", ex=60)  # connects: the pool holds a ready connection from now on
        assert client.get(key) == b"x"
        assert _switches(lambda: client.get(key)) == 0
    finally:
        client.delete(key)
        client.close()


def test_a_worker_without_hiredis_warns_and_counts_itself_at_start_up(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # Correct but slower: a warning and a gauge, not a refusal to start.
    monkeypatch.setattr(redis_pool, "HIREDIS_AVAILABLE", False)
    caplog.set_level(logging.WARNING, logger=cache.__name__)
    try:
        build_app(f"sqlite:///{tmp_path}/parser.db", REDIS_URL=redis_url)
        assert "hiredis >= 3.2 is not installed" in caplog.text
        assert metrics.REGISTRY.get_sample_value("conduit_redis_parser_workers", {"parser": "python"}) == 1
    finally:
        metrics.REDIS_PARSER_WORKERS.labels("python").set(0)
