"""At 100,000 articles on PostgreSQL, the statements behind articlesCount and the tag cloud read a
few counter rows, or index entries of the filters they combine: no Seq Scan, however many rows.

The dataset is the one of tools/explain_counts.py (seeded with generate_series before migration
0005, whose backfill then counts it); its recorded output is bench/recorded/2026-11-29-explain-counts.txt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from tests.conftest import scratch_database
from tools import explain_counts

pytestmark = pytest.mark.postgres

ARTICLES = 100_000

# Rows a statement may read (scan nodes' rows x loops): a counter lookup reads one counter and at
# most one user; a feed one follow row and one counter per followed author; a combined filter the
# index entries of its filters (100 articles by the author, 100 favorites, one probe per entry);
# the tag cloud its LIMIT.
MAX_ROWS_READ = {
    "count all": 1,
    "count by tag": 1,
    "count by author": 2,
    "count by favorited": 2,
    "count feed": 2 * explain_counts.FOLLOWED,
    "count tag+author": 1 + 2 * 100,
    "count tag+favorited": 1 + 2 * 100,
    "count author+favorited": 2 + 2 * 100,
    "count tag+author+favorited": 2 + 3 * 100,
    "tag cloud": 100,
}


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with scratch_database("conduit_plans") as url:
        engine = create_engine(make_url(url).set(drivername="postgresql+psycopg2"))
        try:
            explain_counts.apply(engine, through="0004")
            started = time.perf_counter()
            explain_counts.seed(engine, ARTICLES)
            explain_counts.apply(engine, only=explain_counts.COUNTS_MIGRATION)
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE article_counts, tag_counts"))
            print(f"seeded {ARTICLES:,} articles and migrated in {time.perf_counter() - started:.1f} s")
            yield engine
        finally:
            engine.dispose()


def _params(name: str, statement: Any) -> dict[str, Any]:
    return {k: v for k, v in explain_counts.CASES[name].items() if f":{k}" in statement.text}


def _rows_read(plan: dict[str, Any]) -> int:
    return sum(
        int(node["Actual Rows"]) * int(node["Actual Loops"])
        for node in explain_counts.nodes(plan)
        if node["Node Type"].endswith("Scan")
    )


@pytest.mark.parametrize("name", list(explain_counts.AFTER))
def test_a_count_at_a_hundred_thousand_articles_reads_no_table_whole(engine: Engine, name: str) -> None:
    statement = explain_counts.AFTER[name]
    with engine.connect() as conn:
        plan = explain_counts.explain(conn, statement, _params(name, statement), fmt="JSON")
    scans = [(node["Node Type"], node.get("Relation Name")) for node in explain_counts.nodes(plan)]
    assert not [scan for scan in scans if scan[0] == "Seq Scan"], scans
    assert _rows_read(plan) <= MAX_ROWS_READ[name], (scans, _rows_read(plan))


def test_the_old_counts_read_whole_tables_at_a_hundred_thousand_articles(engine: Engine) -> None:
    """The release before 0005, for scale: the same measure flags its COUNT(*) and GROUP BY."""
    with engine.connect() as conn:
        for name in ("count all", "tag cloud"):
            statement = explain_counts.BEFORE[name]
            plan = explain_counts.explain(conn, statement, _params(name, statement), fmt="JSON")
            assert _rows_read(plan) >= ARTICLES, name


def test_the_backfill_and_the_counts_agree_with_count_star_at_scale(engine: Engine) -> None:
    with engine.connect() as conn:
        for name, statement in explain_counts.AFTER.items():
            old = explain_counts.BEFORE[name]
            new_answer = conn.execute(statement, _params(name, statement)).all()
            old_answer = conn.execute(old, _params(name, old)).all()
            assert new_answer == old_answer, name
