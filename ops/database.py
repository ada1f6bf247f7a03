"""The cluster's PostgreSQL: create its database if missing, and keep the replicas within max_connections."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from config.settings import BaseConfig

# Per worker when the budget is tight: 5 read + 3 write + 2 x 2 overflow = 12 connections.
SMALL_POOLS = {"DB_POOL_SIZE": "5", "DB_WRITE_POOL_SIZE": "3", "DB_MAX_OVERFLOW": "2"}
RESERVED = 3  # superuser_reserved_connections


class DatabaseError(RuntimeError):
    pass


def prepare(url: str, log: Callable[[str], None]) -> int | None:
    """Create the database of `url` if it does not exist; return the server's max_connections.

    None for a database that is not PostgreSQL. Any other connection error is raised."""
    if not url.startswith(("postgresql:", "postgres:")):
        return None
    target = make_url(url).set(drivername="postgresql+psycopg2")
    for attempt in range(2):
        probe = create_engine(target, connect_args={"connect_timeout": 3})
        try:
            with probe.connect() as conn:
                return int(conn.execute(text("SHOW max_connections")).scalar_one())
        except OperationalError as exc:
            if "does not exist" not in str(exc) or attempt:
                raise DatabaseError(f"PostgreSQL at {target.render_as_string()}: {exc.orig}") from exc
        finally:
            probe.dispose()
        admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{target.database}"'))
        admin.dispose()
        log(f"created database {target.database}")
    return None


def per_worker(env: MutableMapping[str, str]) -> int:
    """Connections one gunicorn worker may open: read pool + write pool + an overflow for each."""
    pool = int(env.get("DB_POOL_SIZE") or BaseConfig.DB_POOL_SIZE)
    write = int(env.get("DB_WRITE_POOL_SIZE") or BaseConfig.DB_WRITE_POOL_SIZE)
    overflow = int(env.get("DB_MAX_OVERFLOW") or BaseConfig.DB_MAX_OVERFLOW)
    return pool + write + 2 * overflow


def fit_budget(env: MutableMapping[str, str], processes: int, max_connections: int, log: Callable[[str], None]) -> None:
    """Shrink the pools in `env` (unless set explicitly) when `processes` workers could exceed the server."""
    budget = max_connections - RESERVED
    if processes * per_worker(env) > budget and not any(env.get(k) for k in SMALL_POOLS):
        env.update(SMALL_POOLS)
        log(f"database pools reduced to {SMALL_POOLS} so {processes} workers fit max_connections {max_connections}")
    if processes * per_worker(env) > budget:
        log(
            f"warning: {processes} workers x {per_worker(env)} connections = {processes * per_worker(env)} may exceed "
            f"PostgreSQL's max_connections {max_connections} - {RESERVED}: lower DB_POOL_SIZE, DB_WRITE_POOL_SIZE, "
            "DB_MAX_OVERFLOW, the replicas or the workers"
        )
