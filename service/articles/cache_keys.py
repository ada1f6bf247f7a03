"""What the shared cache knows of articles, lists and the feed: keys, generations, the `favorited`
fact and the `favoritesCount` count.

One generation per article where a write targets it (update, delete), and LISTS, bumped by an
article changed or deleted, for every list and feed (either can change any page). A new article
drops only the pages that can hold it (`new_article_gens`): unfiltered pages and every feed
(NEW_ARTICLES: a feed's followers cannot be listed), and the pages of its tags and of its author.
A page filtered by `favorited` cannot hold it (a new article has no favorites), so it needs none
of these. A favorite drops no page, not even the article's own: it bumps the article's count
generation (its number on every page comes from the count's small entry until the page is filled
again), the favoriter's `?favorited=` pages and their own `favorited` flags.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import text

from service.api.schemas import Page
from service.articles.schemas import ListQuery
from service.caching import cache, fastpath, personalize
from service.caching.keys import Key
from service.caching.personalize import Fact
from service.profiles.cache_keys import FOLLOWING, PROFILES, follows_gen

LISTS = "lists"
NEW_ARTICLES = "lists:new"

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


def tag_lists_gen(tag: str) -> str:
    """The `?tag=` pages of `tag`: bumped by a new article with that tag."""
    return f"lists:tag:{tag}"


def author_lists_gen(username: str) -> str:
    """The `?author=` pages of `username`: bumped by their new article."""
    return f"lists:author:{username}"


def new_article_gens(author: str, tags: Iterable[str]) -> list[str]:
    """What a new article by `author` with `tags` bumps: the pages that can hold it (list_key, feed_key)."""
    return [NEW_ARTICLES, author_lists_gen(author), *map(tag_lists_gen, tags)]


def favorites_gen(user_id: int) -> str:
    """What `user_id` favorited: bumped on their favorite and unfavorite (their `favorited` flags)."""
    return f"favorites:{user_id}"


def article_gen(slug: str) -> str:
    return f"article:{slug}"


@cache.key_family("a2")
def article_key(slug: str) -> list[str]:
    return [article_gen(slug), PROFILES]


@cache.key_family("l4")  # "l3" pages: a new article bumped LISTS
def list_key(tag: str | None, author: str | None, favorited: str | None, limit: int, offset: int) -> list[str]:
    """A list page: a new article can be on it unless `favorited` is given (see the module doc)."""
    if favorited is not None:
        return [LISTS, PROFILES, favorited_by_gen(favorited)]
    filters = [] if tag is None else [tag_lists_gen(tag)]
    filters += [] if author is None else [author_lists_gen(author)]
    return [LISTS, PROFILES, *(filters or [NEW_ARTICLES])]


@cache.key_family("f4")  # "f3" pages: a new article bumped LISTS
def feed_key(viewer: int, limit: int, offset: int) -> list[str]:
    """The viewer's own feed page: which articles it holds depends on whom they follow."""
    return [follows_gen(viewer), LISTS, PROFILES, NEW_ARTICLES]


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
