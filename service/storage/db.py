"""Engine and pool per app, and the two ways to use them.

`read()` gives an autocommit connection for queries (no BEGIN/ROLLBACK round
trips); `transaction()` gives a connection inside one transaction that commits
when the block ends and rolls back on any exception. Services own
transactions; repositories only take a connection.

On PostgreSQL reads and writes have separate pools: a pool whose connections
are autocommit from birth costs no per-checkout mode switch (measured: a read
went from 277 to 128 us of CPU). A connection is pinged before use when it has
been idle for DB_PING_AFTER seconds; one used moments ago is known good, and a
connection that fails mid-use invalidates its pool, so pinging every checkout
(another round trip per request) buys nothing under load.

No state is kept on a server session, so DATABASE_URL may point at PgBouncer in
transaction pooling mode, where consecutive transactions of one client run on
different server connections: the timeouts are set with `SET LOCAL` in front of
the first statement of every transaction (see `_timeouts_per_transaction`), and
nothing is prepared on the server. Whatever needs a session of its own
(migrations) uses DATABASE_DIRECT_URL (`direct_engine`).

With DATABASE_REPLICA_URLS, `read()` may run on a streaming replica, but only one that replayed
the reader's own recent writes and, for a cache fill, the writes behind the entry's generations;
`transaction()` records each commit's WAL position for both (service/storage/replicas.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from flask import Flask, current_app, g, has_app_context
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy import exc as exc_module
from sqlalchemy.engine import make_url

from service.storage import replicas as replicas_module

log = logging.getLogger(__name__)

SQLITE_BEGIN_READ = "BEGIN DEFERRED"
# Writers take the lock up front: a deferred transaction that reads and then
# writes can fail with "database is locked" without waiting for the busy timeout.
SQLITE_BEGIN_WRITE = "BEGIN IMMEDIATE"


class Database:
    """The engine of one app, kept in `app.extensions["db"]`."""

    def __init__(self, engine: Engine, reader: Engine | None = None) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name  # "postgresql" or "sqlite"
        self.reader = reader or engine.execution_options(isolation_level="AUTOCOMMIT")
        # engine -> gauge of requests waiting for one of its connections (service.runtime.metrics)
        self.waiting: dict[Engine, Any] = {}
        # DATABASE_REPLICA_URLS (service/storage/replicas.py); None: every read on the primary.
        self.replicas: replicas_module.Replicas | None = None
        # Called with "primary" or "replica<i>" for each read when there are replicas (metrics).
        self.on_read: Any = None

    @property
    def engines(self) -> tuple[Engine, ...]:
        """Every engine with its own pool (for event listeners and dispose)."""
        return (self.engine,) if self.reader.pool is self.engine.pool else (self.engine, self.reader)

    def dispose(self) -> None:
        for engine in self.engines:
            engine.dispose()
        if self.replicas is not None:
            self.replicas.dispose()

    @contextmanager
    def read(self, user_id: int | None = None, *, primary: bool = False) -> Iterator[Connection]:
        """An autocommit connection; with replicas, on one that replayed what this reader must see.

        `user_id` names the reader when `g.user_id` is not set yet (the token check); `primary`
        asks for the primary (a read that cannot name whose writes it must see, e.g. a login)."""
        if self.replicas is None:
            with self._connect(self.reader) as conn:
                yield conn
            return
        floor = replicas_module.PRIMARY_ONLY if primary else self._read_floor(user_id)
        chosen = self.replicas.connect(floor)
        if chosen is None:
            self._count_read("primary")
            with self._connect(self.reader) as conn:
                yield conn
            return
        replica, replica_conn = chosen
        wrapped = replicas_module.ReplicaConnection(replica_conn, replica, lambda: self._connect(self.reader))
        try:
            yield cast(Connection, wrapped)
        finally:
            wrapped.close()
            self._count_read("primary" if wrapped.failed_over else replica.name)

    def _read_floor(self, user_id: int | None) -> int:
        """The WAL position a replica must have replayed for this read (0: any usable replica)."""
        if not has_app_context():
            return 0
        floor = int(g.get("db_fill_floor", 0))
        if user_id is None:
            user_id = g.get("user_id")
        if user_id is not None:
            floors: dict[int, int] = g.setdefault("db_user_floors", {})
            if user_id not in floors:
                assert self.replicas is not None
                floors[user_id] = self.replicas.floor_of(user_id)
            floor = max(floor, floors[user_id])
        return floor

    def remember_write(self, user_id: int) -> None:
        """Make `user_id`'s next reads see this request's writes (for a write made before `g.user_id` was set)."""
        if self.replicas is not None and has_app_context() and g.get("db_write_lsn"):
            self.replicas.remember_write(user_id, int(g.db_write_lsn))

    def _count_read(self, database: str) -> None:
        if self.on_read is not None:
            self.on_read(database)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self._connect(self.engine).execution_options(write=True) as conn:
            with conn.begin():
                yield conn
            if self.replicas is not None:
                self._after_commit(conn)

    def _after_commit(self, conn: Connection) -> None:
        """Record the commit's WAL position: the writer's floor for later reads, and the cache bump's."""
        assert self.replicas is not None
        try:
            lsn = int(conn.exec_driver_sql(replicas_module.WRITE_LSN).scalar_one())
            conn.rollback()
        except exc_module.SQLAlchemyError as exc:
            # Committed, but where is unknown: the writer reads the primary for a while rather than
            # fail a write that succeeded (bumps keep this worker's last known floor).
            log.warning("could not read the commit's WAL position (%s); the writer reads the primary", exc)
            lsn = replicas_module.PRIMARY_ONLY
        if not has_app_context():
            return
        if lsn < replicas_module.PRIMARY_ONLY:
            g.db_write_lsn = max(int(g.get("db_write_lsn", 0)), lsn)
        user_id = g.get("user_id")
        if user_id is not None:
            self.replicas.remember_write(user_id, lsn)
            floors: dict[int, int] = g.setdefault("db_user_floors", {})
            floors[user_id] = max(floors.get(user_id, 0), lsn)

    def _connect(self, engine: Engine) -> Connection:
        """`engine.connect()`, counted in the pool's waiting gauge until a connection is checked out."""
        waiting = self.waiting.get(engine)
        if waiting is None:
            return engine.connect()
        waiting.inc()
        try:
            return engine.connect()
        finally:
            waiting.dec()


def build_engine(settings: dict[str, Any], *, reader: bool = False, url: str | None = None) -> Engine:
    """The engine for DATABASE_URL (or `url`): for writes, or (`reader`) autocommit for reads."""
    parsed = make_url(url or settings["DATABASE_URL"])
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() != "postgresql":
        raise ValueError(f"unsupported DATABASE_URL backend {parsed.get_backend_name()!r}")
    size = settings["DB_POOL_SIZE"] if reader else settings["DB_WRITE_POOL_SIZE"]
    engine = create_engine(
        parsed.set(drivername="postgresql+psycopg2"),
        isolation_level="AUTOCOMMIT" if reader else "READ COMMITTED",
        pool_size=size,
        max_overflow=settings["DB_MAX_OVERFLOW"],
        pool_timeout=settings["DB_POOL_TIMEOUT"],
        pool_recycle=settings["DB_POOL_RECYCLE"],
        pool_use_lifo=True,
        # Errors are logged; their SQL parameters hold emails and password hashes.
        hide_parameters=True,
        connect_args={
            "connect_timeout": max(1, int(settings["DB_CONNECT_TIMEOUT"])),
            "application_name": "conduit",
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
        },
    )
    _ping_when_idle(engine, float(settings["DB_PING_AFTER"]))
    _timeouts_per_transaction(engine, int(settings["DB_STATEMENT_TIMEOUT_MS"]), reader=reader)
    return engine


def direct_engine(settings: dict[str, Any]) -> Engine:
    """A write engine on DATABASE_DIRECT_URL, for work that needs a server session of its own (migrations).

    The caller disposes of it. Without a direct URL of its own it is simply another DATABASE_URL engine."""
    return build_engine(settings, url=settings.get("DATABASE_DIRECT_URL") or settings["DATABASE_URL"])


# Sent in the same simple query as the statement, so they cost no round trip. PostgreSQL runs a
# query string of several statements as one implicit transaction, so on the autocommit reader too
# SET LOCAL holds for exactly the statement after it (alone, it would be a no-op with a WARNING).
# A session-level SET, or the `options` startup parameter, would not survive transaction pooling:
# PgBouncer 1.18 refuses `options` at login, and a SET stays on a server connection that the next
# transaction, of any client, may get. The reader's one statement cannot sit idle in a transaction,
# so it sends only the statement timeout (each SET costs the server about 20-30 us; measured).
SET_LOCAL_STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = {ms}; "
SET_LOCAL_IDLE_TIMEOUT = "SET LOCAL idle_in_transaction_session_timeout = 10000; "


def _timeouts_per_transaction(engine: Engine, statement_timeout_ms: int, *, reader: bool) -> None:
    """Put the timeouts in front of the first statement of every transaction (every statement on the reader)."""
    prefix = SET_LOCAL_STATEMENT_TIMEOUT.format(ms=int(statement_timeout_ms))
    if not reader:
        prefix += SET_LOCAL_IDLE_TIMEOUT
    idle = engine.dialect.loaded_dbapi.extensions.TRANSACTION_STATUS_IDLE

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _prefix(
        _conn: Connection, cursor: Any, statement: str, parameters: Any, _context: Any, _executemany: bool
    ) -> tuple[str, Any]:
        # Idle: this statement starts a transaction (psycopg2 sends BEGIN first), or, in
        # autocommit, is one. Inside a transaction the SET LOCAL of its first statement holds,
        # and a later SET LOCAL (migrations lift the timeout) must not be undone.
        if cursor.connection.get_transaction_status() == idle:
            statement = prefix + statement
        return statement, parameters


PING = "SELECT 1"


def _ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection before use if it sat idle for `idle_seconds`.

    SQLAlchemy's recipe for custom pessimistic checks: raising
    DisconnectionError makes the pool drop that connection and try another.
    """

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["last_used"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("last_used", 0.0) < idle_seconds:
            return
        try:
            with dbapi_conn.cursor() as cursor:
                cursor.execute(PING)
            if not dbapi_conn.autocommit:
                # psycopg2 opened a transaction for the ping; the request's must start afresh
                # (with its timeouts, and without holding a pooled server connection meanwhile).
                dbapi_conn.rollback()
        except engine.dialect.loaded_dbapi.Error as exc:
            raise exc_module.DisconnectionError(str(exc)) from exc


def _sqlite_engine(url: Any) -> Engine:
    if url.database and url.database != ":memory:":
        from pathlib import Path

        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, hide_parameters=True, connect_args={"timeout": 10, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys = ON")
        cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA busy_timeout = 10000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return
        write = conn.get_execution_options().get("write")
        conn.exec_driver_sql(SQLITE_BEGIN_WRITE if write else SQLITE_BEGIN_READ)

    return engine


def init_app(app: Flask) -> Database:
    engine = build_engine(app.config)
    reader = build_engine(app.config, reader=True) if engine.dialect.name == "postgresql" else None
    database = Database(engine, reader)
    urls = replicas_module.replica_urls(app.config)
    if urls and engine.dialect.name == "postgresql":
        database.replicas = replicas_module.Replicas(
            [build_engine(app.config, reader=True, url=url) for url in urls],
            float(app.config["DATABASE_REPLICA_MAX_LAG"]),
            float(app.config["DB_CONNECT_TIMEOUT"]),
            _replica_redis(app.config),
        )
        database.replicas.prefix = app.config["CACHE_KEY_PREFIX"]
    app.extensions["db"] = database
    return database


def _replica_redis(cfg: dict[str, Any]) -> Any:
    """The Redis client for read-your-writes floors (None without REDIS_URL: per-worker floors)."""
    if not cfg.get("REDIS_URL"):
        return None
    import redis

    from service.storage import redis_pool

    timeout = float(cfg["CACHE_SOCKET_TIMEOUT"])
    return redis.Redis(connection_pool=redis_pool.fail_fast_pool(cfg["REDIS_URL"], 16, 1.0, timeout))


def get_db() -> Database:
    db: Database = current_app.extensions["db"]
    return db
