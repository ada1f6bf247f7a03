"""Redis connection pools for a gevent worker: fail fast, and no trip to the hub per checkout.

redis-py 8's hiredis parser checks every connection it hands out of a pool with
a zero-timeout select.poll() (redis/_parsers/hiredis.py, `_socket_can_read`).
In a gunicorn gevent worker `select.poll` is gevent's (monkey.patch_all), which
waits on the hub even for a zero timeout: two greenlet switches per command, and
the request goes to the back of the run queue before it has sent anything.
`NoYieldHiredisParser` makes that one probe with the real poll(), which never
blocks at timeout 0; anything else (a wait, buffered data, a readable socket,
TLS) goes to redis-py's own code.

redis-py 8.1 uses hiredis only from 3.2 on and silently falls back to its
pure-Python parser otherwise: `HIREDIS_AVAILABLE` says which one runs.
"""

from __future__ import annotations

import select
from typing import Any

import redis
from gevent.monkey import get_original
from redis._parsers import _HiredisParser
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

__all__ = ["HIREDIS_AVAILABLE", "NoYieldHiredisParser", "fail_fast_pool", "parser_class"]

_real_poll = get_original("select", "poll")


class NoYieldHiredisParser(_HiredisParser):
    def can_read(self, timeout: float = 0) -> bool:
        sock = getattr(self, "_sock", None)  # set by on_connect
        if timeout or sock is None or self._reader is None or self._reader.has_data():
            return bool(super().can_read(timeout))
        if hasattr(sock, "pending") and sock.pending():  # TLS bytes decrypted already
            return bool(super().can_read(timeout))
        poller = _real_poll()
        poller.register(sock, select.POLLIN)
        if not poller.poll(0):
            return False  # the usual case: an idle connection, nothing to read
        return bool(super().can_read(timeout))  # data or EOF: redis-py tells them apart


def parser_class() -> type:
    """The parser the pools use: the no-yield hiredis one, or redis-py's default without hiredis."""
    return NoYieldHiredisParser if HIREDIS_AVAILABLE else redis.connection.DefaultParser


def fail_fast_pool(url: str, max_connections: int, pool_wait: float, socket_timeout: float) -> redis.ConnectionPool:
    """A bounded pool: one try, short socket timeouts, a short wait for a free connection.

    redis-py's defaults block for seconds (retries with backoff) or a minute (a
    hung server), and its default pool raises once `max_connections` greenlets
    want a connection at the same moment.
    """
    kwargs: dict[str, Any] = {
        "max_connections": max_connections,
        "timeout": pool_wait,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
        "parser_class": parser_class(),
    }
    return redis.BlockingConnectionPool.from_url(url, **kwargs)
