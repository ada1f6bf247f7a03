"""SQL for the tag cloud. Functions take a connection and never commit."""

from __future__ import annotations

from sqlalchemy import Connection, text

# The top of the index tag_counts_popular_idx (n DESC, tag): reads `limit` entries, not every tag link.
# The counts are kept by triggers in the writes' own transactions (migration 0005).
SELECT_POPULAR_TAGS = text("SELECT tag FROM tag_counts WHERE n > 0 ORDER BY n DESC, tag LIMIT :limit")


def popular_tags(conn: Connection, limit: int) -> list[str]:
    """Up to `limit` tags in use, most used first, ties by name."""
    return [row[0] for row in conn.execute(SELECT_POPULAR_TAGS, {"limit": limit})]
