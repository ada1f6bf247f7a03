"""SQL for the tag cloud. Functions take a connection and never commit."""

from __future__ import annotations

from sqlalchemy import Connection, text

SELECT_POPULAR_TAGS = text(
    """
    SELECT tag FROM article_tags
    GROUP BY tag
    ORDER BY COUNT(*) DESC, tag
    LIMIT :limit
    """
)


def popular_tags(conn: Connection, limit: int) -> list[str]:
    """Up to `limit` tags in use, most used first, ties by name."""
    return [row[0] for row in conn.execute(SELECT_POPULAR_TAGS, {"limit": limit})]
