"""Use cases for tags."""

from __future__ import annotations

from service.db import get_db
from service.tags import repository as repo

# The tag cloud is a summary, not an index: its size stays bounded however many
# distinct tags exist.
TAGS_LIMIT = 100


def popular() -> list[str]:
    """The most used tags (at most TAGS_LIMIT), most used first."""
    with get_db().read() as conn:
        return repo.popular_tags(conn, TAGS_LIMIT)
