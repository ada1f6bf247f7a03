"""Cache keys and generations of comments: one generation per article's comments."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from service.caching import cache, fastpath
from service.comments.schemas import MAX_OFFSET, CommentPage
from service.profiles.cache_keys import FOLLOWING, PROFILES


def comments_gen(slug: str) -> str:
    """The comments of the article `slug`: bumped by a comment written or deleted, and by the article's deletion."""
    return f"comments:{slug}"


# "c4": entries lead with the comment count (since commentsCount) and carry the facts header with
# flag offsets (service.caching.personalize); "c:" to "c3:" ones from before never match.
@cache.key_family("c4")
def comments_key(slug: str, limit: int, offset: int) -> list[str]:
    return [comments_gen(slug), PROFILES]


def next_link(url: str) -> tuple[str, str]:
    """The `Link` header to the page after this one (RFC 8288)."""
    return ("Link", f'<{url}>; rel="next"')


def _page_links(
    values: Mapping[str, Any], query: CommentPage, entry: bytes, build: Callable[..., str]
) -> tuple[bytes, list[tuple[str, str]]]:
    """A comment page's entry leads with the article's comment count: the Link to the next page, if any."""
    count, _, rest = entry.partition(b"\n")
    following = query.offset + query.limit
    if following < int(count) and following <= MAX_OFFSET:
        return rest, [next_link(build({**values, "limit": query.limit, "offset": following}))]
    return rest, []


# Anonymous hits are answered ahead of Flask (service.caching.fastpath).
fastpath.serve(
    "comments.list_comments",
    fastpath.Route(
        lambda v, q, viewer: comments_key(v["slug"], q.limit, q.offset),
        CommentPage,
        "private, no-cache",
        "Authorization",
        split=_page_links,
        facts=(FOLLOWING,),
    ),
)
