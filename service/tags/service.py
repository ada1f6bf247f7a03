"""Use cases for tags."""

from __future__ import annotations

from service.caching.cache import get_cache
from service.caching.personalize import personalize, shared
from service.storage.db import get_db
from service.tags import repository as repo
from service.tags.cache_keys import tags_key
from service.tags.schemas import TagsResponse

# The tag cloud is a summary, not an index: its size stays bounded however many
# distinct tags exist.
TAGS_LIMIT = 100


def popular() -> bytes:
    """The most used tags (at most TAGS_LIMIT), most used first (encoded)."""

    def load() -> bytes:
        with get_db().read() as conn:
            return shared(TagsResponse(repo.popular_tags(conn, TAGS_LIMIT)))

    return personalize(get_cache().fetch(tags_key(), load), None)
