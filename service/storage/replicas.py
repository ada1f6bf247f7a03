"""Reads on PostgreSQL streaming replicas (DATABASE_REPLICA_URLS), never staler than the reader may see.

A read that may lag goes to a replica; writes, and reads inside write transactions, stay on the
primary. Two kinds of read must not see the past, and both carry a WAL position (LSN) floor:

- read-your-writes: after a write transaction commits, its connection reads
  `pg_current_wal_insert_lsn()` (the end of the commit record; `pg_current_wal_lsn()` can trail
  it) and keeps it, per user, in Redis (`rw:<user id>`, the maximum, RYW_TTL seconds). Any service
  replica then sends that user's reads to a database replica only once its
  `pg_last_wal_replay_lsn()` reached the floor, else to the primary. Kept server-side rather than
  echoed by the client: it needs nothing from API clients and holds across service replicas.
- cache fills: a generation bump records the LSN next to the generation (service/caching/cache.py);
  a miss fills from a replica only once it replayed past the floor of every generation the entry
  depends on, else from the primary.

The replay position only moves forward, and every autocommit statement takes a new snapshot, so
checking it on the connection before the query is enough. Each worker checks each replica's lag
and state at most once every CHECK_SECONDS (on the read that finds the last check old); a
replica that is down, not in recovery, or lags past DATABASE_REPLICA_MAX_LAG is skipped. A read
whose replica fails mid-query (down, or a statement cancelled by a recovery conflict, SQLSTATE
40001) runs again on the primary: a read-only statement on an autocommit connection is safe to repeat.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gevent
import redis
from sqlalchemy import Connection, Engine
from sqlalchemy import exc as exc_module

log = logging.getLogger(__name__)

# Seconds a worker trusts its last look at a replica's lag and state.
CHECK_SECONDS = 1.0
# Seconds a user's write position is kept: far above any lag a usable replica may have.
RYW_TTL = 30

STATE = (
    "SELECT pg_is_in_recovery(), "
    "COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), 0)::bigint, "
    "CASE WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END::float8"
)
REPLAY_LSN = "SELECT COALESCE(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), 0)::bigint"
# After COMMIT, on the connection that committed.
WRITE_LSN = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint"

# rw:<user> = max(current, ARGV[1]) with TTL ARGV[2].
REMEMBER_SCRIPT = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local lsn = tonumber(ARGV[1])
if lsn > current then current = lsn end
redis.call('SET', KEYS[1], string.format('%d', current), 'EX', ARGV[2])
return current
"""

# Without Redis, expired floors are dropped once this many users have one.
LOCAL_FLOORS_PURGE_AT = 10_000

# A floor no replica reaches: read the primary.
PRIMARY_ONLY = 2**62  # exact in Lua's doubles; far past any real LSN


@dataclass
class Replica:
    """One replica's engine and this worker's last look at it."""

    index: int
    engine: Engine
    up: bool = False
    state: str = "unknown"
    lag: float | None = None
    replay_lsn: int = 0
    checked_at: float = -1e9
    checking: bool = field(default=False, repr=False)

    @property
    def name(self) -> str:
        return f"replica{self.index}"

    def mark_down(self, reason: str) -> None:
        if self.up:
            log.warning("read replica %d unusable (%s); its reads go to the primary", self.index, reason)
        self.up, self.state, self.checked_at = False, reason, time.monotonic()


class Replicas:
    """The replicas of one app, their health, and the read-your-writes floors in Redis."""

    def __init__(self, engines: list[Engine], max_lag: float, check_timeout: float, redis_client: Any) -> None:
        self.replicas = [Replica(i, engine) for i, engine in enumerate(engines)]
        self.max_lag = max_lag
        self.check_timeout = check_timeout
        self.redis = redis_client
        self.prefix = ""
        self._remember = redis_client.register_script(REMEMBER_SCRIPT) if redis_client is not None else None
        # Without Redis: this worker's floors only, user -> (LSN, when it expires).
        self._local_floors: dict[int, tuple[int, float]] = {}
        self._next = 0

    def dispose(self) -> None:
        for replica in self.replicas:
            replica.engine.dispose()

    # -- health ------------------------------------------------------------------------------

    def check(self, replica: Replica) -> None:
        """Look at the replica's state and lag now (one short query)."""
        replica.checking = True
        try:
            with gevent.Timeout(self.check_timeout), replica.engine.connect() as conn:
                in_recovery, replay, lag = conn.exec_driver_sql(STATE).one()
        except (exc_module.SQLAlchemyError, gevent.Timeout, OSError) as exc:
            replica.mark_down("down")
            log.debug("read replica %d check failed: %s", replica.index, exc)
            return
        finally:
            replica.checking = False
        replica.checked_at = time.monotonic()
        replica.lag = float(lag)
        replica.replay_lsn = max(replica.replay_lsn, int(replay))
        if not in_recovery:
            replica.mark_down("not a standby")
        elif replica.lag > self.max_lag:
            replica.mark_down("lagging")
        else:
            if not replica.up:
                log.info("read replica %d usable (lag %.3fs)", replica.index, replica.lag)
            replica.up, replica.state = True, "ok"

    def usable(self) -> list[Replica]:
        """The replicas to read from now, checking any whose last look is older than CHECK_SECONDS."""
        now = time.monotonic()
        for replica in self.replicas:
            if now - replica.checked_at >= CHECK_SECONDS and not replica.checking:
                self.check(replica)
        return [replica for replica in self.replicas if replica.up]

    def report(self) -> list[dict[str, Any]]:
        """Each replica's state and lag, freshly checked (for /readyz)."""
        for replica in self.replicas:
            if not replica.checking:
                self.check(replica)
        return [
            {"replica": r.index, "state": r.state, "lag_seconds": None if r.lag is None else round(r.lag, 3)}
            for r in self.replicas
        ]

    # -- routing -----------------------------------------------------------------------------

    def connect(self, floor: int) -> tuple[Replica, Connection] | None:
        """A connection to a replica that replayed up to `floor`; None when the primary must serve."""
        if floor >= PRIMARY_ONLY:
            return None
        candidates = self.usable()
        if not candidates:
            return None
        self._next += 1
        start = self._next % len(candidates)
        for replica in candidates[start:] + candidates[:start]:
            try:
                conn = replica.engine.connect()
            except exc_module.SQLAlchemyError as exc:
                replica.mark_down("down")
                log.debug("read replica %d connect failed: %s", replica.index, exc)
                continue
            if floor > replica.replay_lsn:
                try:
                    replica.replay_lsn = max(replica.replay_lsn, int(conn.exec_driver_sql(REPLAY_LSN).scalar_one()))
                except exc_module.SQLAlchemyError:
                    conn.close()
                    replica.mark_down("down")
                    continue
                if floor > replica.replay_lsn:
                    conn.close()
                    continue
            return replica, conn
        return None

    # -- read-your-writes floors -------------------------------------------------------------

    def remember_write(self, user_id: int, lsn: int) -> None:
        """Keep `lsn` as `user_id`'s floor (the maximum) for RYW_TTL seconds."""
        if self._remember is None:
            now = time.monotonic()
            if len(self._local_floors) >= LOCAL_FLOORS_PURGE_AT:
                self._local_floors = {u: f for u, f in self._local_floors.items() if f[1] > now}
            self._local_floors[user_id] = (max(self._local_floor(user_id), lsn), now + RYW_TTL)
            return
        try:
            self._remember(keys=[f"{self.prefix}rw:{user_id}"], args=[lsn, RYW_TTL])
        except redis.RedisError as exc:
            log.warning("could not record the write position of user %s (%s)", user_id, exc)

    def _local_floor(self, user_id: int) -> int:
        lsn, expires = self._local_floors.get(user_id, (0, 0.0))
        return lsn if expires > time.monotonic() else 0

    def floor_of(self, user_id: int) -> int:
        """`user_id`'s floor: 0 without a recent write, PRIMARY_ONLY when it cannot be known."""
        if self._remember is None:
            return self._local_floor(user_id)
        try:
            value = self.redis.get(f"{self.prefix}rw:{user_id}")
        except redis.RedisError:
            return PRIMARY_ONLY  # the write may be recent: stay on the primary
        return int(value) if value is not None else 0


def retryable(exc: BaseException) -> bool:
    """A replica error the primary may not have: a lost connection, or a recovery conflict (40001)."""
    if isinstance(exc, exc_module.DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "pgcode", None)
        return code is None or code in ("40001", "57P01", "57P02", "57P03")
    return False


class ReplicaConnection:
    """A replica connection that runs a statement again on the primary if the replica fails.

    Looks like a SQLAlchemy Connection to repositories (they call `execute`)."""

    def __init__(self, conn: Connection, replica: Replica, primary: Callable[[], Connection]) -> None:
        self._conn = conn
        self._replica = replica
        self._primary = primary
        self._failed_over = False

    def _run(self, method: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._conn, method)(*args, **kwargs)
        except exc_module.DBAPIError as exc:
            if self._failed_over or not retryable(exc):
                raise
            log.warning("read replica %d failed a read (%s); reading the primary", self._replica.index, exc.orig)
            if exc.connection_invalidated or getattr(exc.orig, "pgcode", None) != "40001":
                self._replica.mark_down("down")
            with contextlib.suppress(exc_module.SQLAlchemyError):
                self._conn.close()
            self._conn = self._primary()
            self._failed_over = True
            return getattr(self._conn, method)(*args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("execute", *args, **kwargs)

    def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("exec_driver_sql", *args, **kwargs)

    def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("scalar", *args, **kwargs)

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return self._run("scalars", *args, **kwargs)

    def close(self) -> None:
        self._conn.close()

    @property
    def failed_over(self) -> bool:
        return self._failed_over

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def replica_urls(settings: dict[str, Any]) -> list[str]:
    """DATABASE_REPLICA_URLS as a list (config.settings has checked and normalised it)."""
    return [url for url in str(settings.get("DATABASE_REPLICA_URLS") or "").split(",") if url]
