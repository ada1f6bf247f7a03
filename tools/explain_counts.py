"""EXPLAIN the articlesCount and tag-cloud queries at 100,000 articles, before and after migration 0005.

Creates a scratch PostgreSQL database, applies migrations 0001-0004, seeds it with generate_series
(a few seconds), EXPLAINs the counting statements of the release before 0005, applies 0005 (its
backfill is timed) and EXPLAINs the statements the service runs now. Drops the database at the end.

    .venv/bin/python tools/explain_counts.py > bench/recorded/2026-11-29-explain-counts.txt
    .venv/bin/python tools/explain_counts.py --articles 10000 --url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, TextClause, create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.articles import repository as articles  # noqa: E402 - after the path is set
from service.storage import migrate  # noqa: E402
from service.tags import repository as tags  # noqa: E402

COUNTS_MIGRATION = "0005_maintained_counts"
USERS = 1_000
TAGS = 500
FOLLOWED = 50  # authors, by every user

# The dataset: USERS users; articles by author 1 + i % USERS; two tags each out of TAGS, skewed so
# that tag-0 is on every 5th article; every user favorites :favorites articles and follows FOLLOWED
# authors. (articles.favorites_count stays 0: no statement here reads it, and setting it would
# double the seeding time.)
SEED = [
    text(
        """
        INSERT INTO users (username, email, password_hash, created_at, updated_at)
        SELECT 'user' || i, 'user' || i || '@example.com', 'x', now(), now()
        FROM generate_series(1, :users) AS i
        """
    ),
    text(
        """
        INSERT INTO articles (slug, author_id, title, description, body, created_at, updated_at)
        SELECT 'article-' || i, 1 + i % :users, 'Title ' || i, 'd', 'b', now(), now()
        FROM generate_series(1, :articles) AS i
        """
    ),
    text(
        """
        INSERT INTO article_tags (article_id, tag)
        SELECT id, 'tag-' || CASE WHEN id % 5 = 0 THEN 0 ELSE id % :tags END FROM articles
        UNION ALL
        SELECT id, 'tag-' || (1 + (id * 7) % (:tags - 1)) FROM articles
        ON CONFLICT DO NOTHING
        """
    ),
    text(
        """
        INSERT INTO favorites (user_id, article_id, created_at)
        SELECT u, 1 + (u * 97 + k * 1009) % :articles, now()
        FROM generate_series(1, :users) AS u, generate_series(1, :favorites) AS k
        ON CONFLICT DO NOTHING
        """
    ),
    text(
        """
        INSERT INTO follows (follower_id, followee_id, created_at)
        SELECT u, 1 + (u + i * (:users / :followed)) % :users, now()
        FROM generate_series(1, :users) AS u, generate_series(0, :followed - 1) AS i
        """
    ),
]

# The most common tag (on every 5th article), an author with 100 articles all under that tag, a
# user with 100 favorites, the reader of a feed of 50 authors; the combined filters mix them.
CASES: dict[str, dict[str, Any]] = {
    "count all": {},
    "count by tag": {"tag": "tag-0"},
    "count by author": {"author": "user11"},
    "count by favorited": {"favorited": "user7"},
    "count feed": {"viewer": 1},
    "count tag+author": {"tag": "tag-0", "author": "user11", "favorited": None},
    "count tag+favorited": {"tag": "tag-0", "author": None, "favorited": "user7"},
    "count author+favorited": {"tag": None, "author": "user11", "favorited": "user7"},
    "count tag+author+favorited": {"tag": "tag-0", "author": "user11", "favorited": "user11"},
    "tag cloud": {"limit": 100},
}

# The counting statements of the release before migration 0005, as they were.
OLD_COUNT_FILTERED = text(
    """
    SELECT COUNT(*)
    FROM articles a
    WHERE (:tag IS NULL OR a.id IN (SELECT t.article_id FROM article_tags t WHERE t.tag = :tag))
      AND (:author IS NULL OR a.author_id = (SELECT au.id FROM users au WHERE au.username = :author))
      AND (:favorited IS NULL OR a.id IN (
            SELECT f.article_id FROM favorites f
            WHERE f.user_id = (SELECT fu.id FROM users fu WHERE fu.username = :favorited)))
    """
)
BEFORE: dict[str, TextClause] = {
    "count all": text("SELECT COUNT(*) FROM articles"),
    "count by tag": text("SELECT COUNT(*) FROM article_tags WHERE tag = :tag"),
    "count by author": text(
        "SELECT COUNT(*) FROM articles WHERE author_id = (SELECT id FROM users WHERE username = :author)"
    ),
    "count by favorited": text(
        "SELECT COUNT(*) FROM favorites WHERE user_id = (SELECT id FROM users WHERE username = :favorited)"
    ),
    "count feed": text(
        "SELECT COUNT(*) FROM articles a"
        " WHERE a.author_id IN (SELECT fo.followee_id FROM follows fo WHERE fo.follower_id = :viewer)"
    ),
    "count tag+author": OLD_COUNT_FILTERED,
    "count tag+favorited": OLD_COUNT_FILTERED,
    "count author+favorited": OLD_COUNT_FILTERED,
    "count tag+author+favorited": OLD_COUNT_FILTERED,
    "tag cloud": text("SELECT tag FROM article_tags GROUP BY tag ORDER BY COUNT(*) DESC, tag LIMIT :limit"),
}

# What the service runs now.
AFTER: dict[str, TextClause] = {
    "count all": articles.COUNT_ALL,
    "count by tag": articles.COUNT_BY_TAG,
    "count by author": articles.COUNT_BY_AUTHOR,
    "count by favorited": articles.COUNT_BY_FAVORITED,
    "count feed": articles.COUNT_FEED,
    "count tag+author": articles.COUNT_BY_TAG_AUTHOR,
    "count tag+favorited": articles.COUNT_BY_TAG_FAVORITED,
    "count author+favorited": articles.COUNT_BY_AUTHOR_FAVORITED,
    "count tag+author+favorited": articles.COUNT_BY_TAG_AUTHOR_FAVORITED,
    "tag cloud": tags.SELECT_POPULAR_TAGS,
}


EXPLAIN = {"TEXT": "EXPLAIN (ANALYZE, BUFFERS) ", "JSON": "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "}
SIZED = ("users", "articles", "article_tags", "favorites", "follows")
SIZES = text(
    """
    SELECT (SELECT COUNT(*) FROM users), (SELECT COUNT(*) FROM articles), (SELECT COUNT(*) FROM article_tags),
           (SELECT COUNT(*) FROM favorites), (SELECT COUNT(*) FROM follows)
    """
)


@contextmanager
def scratch_database(admin_url: str) -> Iterator[Engine]:
    """A fresh database next to `admin_url`'s, dropped afterwards."""
    url = make_url(admin_url).set(drivername="postgresql+psycopg2")
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    name = f"conduit_explain_{os.getpid()}_{secrets.token_hex(3)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = create_engine(url.set(database=name))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def apply(engine: Engine, *, through: str | None = None, only: str | None = None) -> None:
    """Apply the PostgreSQL migrations up to and including `through`, or just `only`."""
    with engine.begin() as conn:
        seen = migrate.applied(conn)
        for migration in migrate.available("postgresql"):
            if migration.version in seen or (only is not None and migration.version != only):
                continue
            if through is not None and migration.version > through:
                break
            for statement in migration.statements():
                conn.exec_driver_sql(statement)
            conn.execute(migrate.INSERT_APPLIED, {"version": migration.version})


def seed(engine: Engine, n_articles: int, favorites_per_user: int = 100) -> None:
    """The dataset above, then ANALYZE so the planner knows it."""
    params = {
        "users": USERS,
        "articles": n_articles,
        "tags": TAGS,
        "favorites": favorites_per_user,
        "followed": FOLLOWED,
    }
    with engine.begin() as conn:
        # The rows are consistent by construction: skip the per-row foreign-key checks (superuser only).
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        for statement in SEED:
            conn.execute(statement, params)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))


def explain(conn: Connection, statement: TextClause, params: dict[str, Any], fmt: str = "TEXT") -> Any:
    """EXPLAIN (ANALYZE, BUFFERS) of `statement` with `params`, as text lines or (fmt="JSON") the plan."""
    # A constant prefix on a named statement: no value is formatted into SQL.
    explained = text(EXPLAIN[fmt] + statement.text)
    rows = conn.execute(explained, params).all()
    return rows[0][0][0]["Plan"] if fmt == "JSON" else [row[0] for row in rows]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a JSON plan, depth first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument(
        "--url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server to create the scratch database on (default: DATABASE_URL or the local one)",
    )
    args = parser.parse_args(argv)
    with scratch_database(args.url) as engine:
        apply(engine, through="0004")
        started = time.perf_counter()
        seed(engine, args.articles)
        seeded = time.perf_counter() - started
        with engine.connect() as conn:
            sizes = dict(zip(SIZED, conn.execute(SIZES).one(), strict=True))
            server = conn.execute(text("SHOW server_version")).scalar_one()
        print(f"PostgreSQL {server}; seeded in {seeded:.1f} s: " + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))
        report(engine, "BEFORE (COUNT(*) and GROUP BY, migrations 0001-0004)", BEFORE)
        started = time.perf_counter()
        apply(engine, only=COUNTS_MIGRATION)
        print(f"\nmigration {COUNTS_MIGRATION} (tables, triggers, backfill): {time.perf_counter() - started:.2f} s")
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("ANALYZE article_counts, tag_counts"))
        report(engine, "AFTER (maintained counts, migration 0005)", AFTER)
    return 0


def report(engine: Engine, title: str, statements: dict[str, TextClause]) -> None:
    print(f"\n{'=' * 100}\n{title}\n{'=' * 100}")
    with engine.connect() as conn:
        for name, statement in statements.items():
            params = {k: v for k, v in CASES[name].items() if f":{k}" in statement.text}
            answer = conn.execute(statement, params).all()
            shown = answer[0][0] if len(answer) == 1 else f"{len(answer)} rows, first {answer[0][0]!r}"
            print(f"\n--- {name} {params}: {shown}\n{' '.join(statement.text.split())}\n")
            print("\n".join(explain(conn, statement, params)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
