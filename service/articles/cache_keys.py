"""What the shared cache knows of articles, lists and the feed: keys, generations, the `favorited` fact.

One generation per article where a write targets it (update, favorite), and LISTS, bumped by
any article write, for every list (a new article shows on many pages at once).
"""

from __future__ import annotations

from sqlalchemy import text

from service.api.schemas import Page
from service.articles.schemas import ListQuery
from service.caching import cache, fastpath
from service.caching.keys import Key
from service.caching.personalize import Fact
from service.profiles.cache_keys import FOLLOWING, PROFILES, follows_gen

LISTS = "lists"

# `favorited` on every article object, by slug.
FAVORITED = Fact(
    "a",
    match="slug",
    field="favorited",
    query=text("SELECT article_id AS id FROM favorites WHERE user_id = :viewer AND article_id IN :ids"),
    members=text("SELECT article_id AS id FROM favorites WHERE user_id = :viewer"),
    generation=lambda viewer: favorites_gen(viewer),
)
# What an article entry may flag: the article and its author.
ARTICLE_FACTS = (FAVORITED, FOLLOWING)


def favorites_gen(user_id: int) -> str:
    """What `user_id` favorited: bumped on their favorite and unfavorite (their `favorited` flags)."""
    return f"favorites:{user_id}"


def article_gen(slug: str) -> str:
    return f"article:{slug}"


@cache.key_family("a2")
def article_key(slug: str) -> list[str]:
    return [article_gen(slug), PROFILES]


@cache.key_family("l2")
def list_key(tag: str | None, author: str | None, favorited: str | None, limit: int, offset: int) -> list[str]:
    return [LISTS, PROFILES]


@cache.key_family("f2")
def feed_key(viewer: int, limit: int, offset: int) -> list[str]:
    """The viewer's own feed page: which articles it holds depends on whom they follow."""
    return [follows_gen(viewer), LISTS, PROFILES]


# Anonymous hits of these reads are answered ahead of Flask (service.caching.fastpath).
fastpath.serve(
    "articles.get_article",
    fastpath.Route(
        lambda v, q, viewer: article_key(v["slug"]), None, "private, no-cache", "Authorization", facts=ARTICLE_FACTS
    ),
)
fastpath.serve(
    "articles.list_articles",
    fastpath.Route(
        lambda v, q, viewer: list_key(q.tag, q.author, q.favorited, q.limit, q.offset),
        ListQuery,
        "private, no-cache",
        "Authorization",
        facts=ARTICLE_FACTS,
    ),
)


def _feed_route_key(values: object, query: Page, viewer: int | None) -> Key:
    assert viewer is not None  # the route is signed_in
    return feed_key(viewer, query.limit, query.offset)


fastpath.serve(
    "articles.feed",
    fastpath.Route(
        _feed_route_key,
        Page,
        "private, no-cache",
        "Authorization",
        facts=ARTICLE_FACTS,
        signed_in=True,
    ),
)
