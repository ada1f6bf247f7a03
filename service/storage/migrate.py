"""Versioned schema files and the runner that applies them.

Files live in `migrations/<dialect>/NNNN_name.sql`, one set per dialect side by
side. `upgrade()` applies the missing ones in order, each in the same
transaction as its row in `schema_migrations`, under a lock, so that several
replicas starting at once apply every file exactly once. How to add one, and why this
runner rather than a library: docs/migrations.md.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
# Any fixed 64-bit number; it names "the migration lock" for pg_advisory_xact_lock.
LOCK_ID = 4_210_042_001

CREATE_MIGRATIONS_TABLE = text(
    "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TEXT NOT NULL)"
)
TAKE_PG_LOCK = text("SELECT pg_advisory_xact_lock(:lock_id)")
# DB_STATEMENT_TIMEOUT_MS bounds requests; a start waits for the lock, and a migration runs, as long as it takes.
LIFT_PG_STATEMENT_TIMEOUT = text("SET LOCAL statement_timeout = 0")
SELECT_APPLIED = text("SELECT version FROM schema_migrations")
INSERT_APPLIED = text("INSERT INTO schema_migrations (version, applied_at) VALUES (:version, CURRENT_TIMESTAMP)")


@dataclass(frozen=True)
class Migration:
    version: str
    path: Path

    def statements(self) -> list[str]:
        """What to execute, in order, for this file.

        PostgreSQL: the whole file as one string; psycopg2 sends it as one simple query, which the
        server parses itself (string literals, comments, $$ bodies), inside the open transaction.
        SQLite: one statement at a time (sqlite3 executes only one per call, and `executescript`
        would commit the transaction first), cut where SQLite's own tokenizer says a statement is
        complete, so a semicolon in a literal, a comment or a trigger body does not end it.
        """
        sql = self.path.read_text()
        if self.path.parent.name != "sqlite":
            return [sql]
        return split_sqlite(sql)


def split_sqlite(sql: str) -> list[str]:
    """`sql` cut into the statements `sqlite3.complete_statement` (SQLite's own tokenizer) calls complete."""
    statements: list[str] = []
    start = 0
    end = sql.find(";")
    while end != -1:
        if sqlite3.complete_statement(sql[start : end + 1]):
            statements.append(sql[start : end + 1].strip())
            start = end + 1
        end = sql.find(";", end + 1)
    rest = sql[start:].strip()
    if rest:  # a last statement without its semicolon, or only comments (sqlite3 runs those as a no-op)
        statements.append(rest)
    return statements


def available(dialect: str) -> list[Migration]:
    return [Migration(p.stem, p) for p in sorted((MIGRATIONS / dialect).glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def applied(conn: Connection) -> set[str]:
    conn.execute(CREATE_MIGRATIONS_TABLE)
    return {row[0] for row in conn.execute(SELECT_APPLIED)}


def upgrade(engine: Engine) -> list[str]:
    """Apply every pending migration; the versions applied by this call."""
    done: list[str] = []
    # SQLite: BEGIN IMMEDIATE (see db.py) serializes concurrent runners.
    with engine.connect().execution_options(write=True) as conn, conn.begin():
        if engine.dialect.name == "postgresql":
            conn.execute(LIFT_PG_STATEMENT_TIMEOUT)
            conn.execute(TAKE_PG_LOCK, {"lock_id": LOCK_ID})
        seen = applied(conn)
        for migration in available(engine.dialect.name):
            if migration.version in seen:
                continue
            for statement in migration.statements():
                conn.exec_driver_sql(statement)
            conn.execute(INSERT_APPLIED, {"version": migration.version})
            done.append(migration.version)
    return done


def pending(engine: Engine) -> list[str]:
    """Versions not applied yet (readiness checks use this)."""
    with engine.connect() as conn:
        seen = applied(conn)
    return [m.version for m in available(engine.dialect.name) if m.version not in seen]
