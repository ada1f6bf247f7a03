"""Cache keys and generations of tags: the tag cloud, bumped by any article write that changes tags."""

from __future__ import annotations

from service.caching import cache

TAGS = "tags"


@cache.key_family("t2")  # "t" entries from before the facts header (service.caching.personalize) never match
def tags_key() -> list[str]:
    return [TAGS]
