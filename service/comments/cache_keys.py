"""Cache keys and generations of comments: one generation per article's comments."""

from __future__ import annotations

from service.caching import cache
from service.profiles.cache_keys import PROFILES


def comments_gen(slug: str) -> str:
    """The comments of the article `slug`: bumped by a comment written or deleted, and by the article's deletion."""
    return f"comments:{slug}"


# "c3": entries lead with the comment count (since commentsCount) and carry the facts header
# (service.caching.personalize); "c:" and "c2:" ones from before never match.
@cache.key_family("c3")
def comments_key(slug: str, limit: int, offset: int) -> list[str]:
    return [comments_gen(slug), PROFILES]
