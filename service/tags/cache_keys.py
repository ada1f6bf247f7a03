"""Cache keys and generations of tags: the tag cloud, bumped by any article write that changes tags."""

from __future__ import annotations

from service.caching import cache, fastpath

TAGS = "tags"


# Its key is "t:<digest>:<generations>"; the one from before the facts header (service.caching.personalize)
# was "t:<generations>", so the two never meet.
@cache.key_family("t")
def tags_key() -> list[str]:
    return [TAGS]


# Anonymous hits are answered ahead of Flask (service.caching.fastpath).
fastpath.serve("tags.list_tags", fastpath.Route(lambda v, q, viewer: tags_key()))
