"""What the shared cache knows of articles, lists and the feed: keys, generations, the `favorited`
fact and the `favoritesCount` count.

One generation per article where a write targets it (update, delete), and LISTS, bumped by
an article created, changed or deleted, for every list (a new article shows on many pages at
once). A favorite drops no page, not even the article's own: it bumps the article's count
generation (its number on every page comes from the count's small entry until the page is filled
again), the favoriter's `?favorited=` pages and their own `favorited` flags.
"""

from __future__ import annotations

from sqlalchemy import text

from service.api.schemas import Page
from service.articles.schemas import ListQuery
from service.caching import cache, fastpath, personalize
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

# `favoritesCount` on list and feed pages: a favorite bumps the article's count generation, not the pages.
FAVORITES_COUNT = personalize.count(
    "fc:",
    match="slug",
    field="favoritesCount",
    query=text("SELECT id, favorites_count AS n FROM articles WHERE id IN :ids"),
)


def favorited_by_gen(username: str) -> str:
    """The pages of the articles `username` favorited (`?favorited=`): bumped by their favorite and unfavorite."""
    return f"favorited-by:{username}"


def favorites_gen(user_id: int) -> str:
    """What `user_id` favorited: bumped on their favorite and unfavorite (their `favorited` flags)."""
    return f"favorites:{user_id}"


def article_gen(slug: str) -> str:
    return f"article:{slug}"


@cache.key_family("a2")
def article_key(slug: str) -> list[str]:
    return [article_gen(slug), PROFILES]


@cache.key_family("l3")
def list_key(tag: str | None, author: str | None, favorited: str | None, limit: int, offset: int) -> list[str]:
    return [LISTS, PROFILES] if favorited is None else [LISTS, PROFILES, favorited_by_gen(favorited)]


@cache.key_family("f3")
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
