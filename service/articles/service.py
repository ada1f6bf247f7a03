"""Use cases for articles: lists and feed, read, write, favorites.

A page of articles costs a constant number of statements whatever its size:
the page, its total and one batched statement for tags build what an
anonymous reader sees; `personalize` adds one statement for a signed-in
reader's favorites and follows. Writes answer through the same two steps.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from collections.abc import Sequence
from typing import Any

from msgspec import UNSET
from sqlalchemy import Connection, Row
from werkzeug.datastructures import ETags
from werkzeug.http import generate_etag

from service.api import timefmt
from service.api.errors import Forbidden, NotFound, PreconditionFailed, Unavailable, messages
from service.api.schemas import Page
from service.articles import repository as repo
from service.articles.cache_keys import (
    ARTICLE_FACTS,
    FAVORITED,
    FAVORITES_COUNT,
    LISTS,
    article_gen,
    article_key,
    favorited_by_gen,
    favorites_gen,
    feed_key,
    list_key,
    new_article_gens,
)
from service.articles.schemas import (
    Article,
    ArticleSummary,
    ListQuery,
    MultipleArticlesResponse,
    NewArticle,
    SingleArticleResponse,
    UpdateArticle,
)
from service.caching.cache import cached, get_cache
from service.caching.personalize import personalize, shared
from service.comments.cache_keys import comments_gen
from service.profiles.cache_keys import FOLLOWING
from service.profiles.service import to_profile
from service.security import idempotency
from service.storage import foreign_keys
from service.storage.db import get_db
from service.tags.cache_keys import TAGS

# Slugs that would be shadowed by a fixed route (GET /api/articles/feed).
RESERVED_SLUGS = frozenset({"feed"})
SLUG_MAX = 80
SLUG_ATTEMPTS = 5


def slugify(title: str) -> str:
    """A lower-case ASCII slug of `title`; "article" when nothing is left."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return slug[:SLUG_MAX].rstrip("-") or "article"


def _summaries(conn: Connection, rows: Sequence[Row[Any]]) -> list[ArticleSummary]:
    """Articles as an anonymous reader sees them; `personalize` sets the viewer's flags."""
    tags = repo.tags_of(conn, [row.id for row in rows])
    return [
        ArticleSummary(
            slug=row.slug,
            title=row.title,
            description=row.description,
            tagList=tags.get(row.id, []),
            createdAt=timefmt.iso(row.created_at),
            updatedAt=timefmt.iso(row.updated_at),
            favorited=False,
            favoritesCount=row.favorites_count,
            author=to_profile(row, False),
        )
        for row in rows
    ]


def _article(conn: Connection, row: Row[Any]) -> Article:
    summary = _summaries(conn, [row])[0]
    return Article(body=row.body, **{f: getattr(summary, f) for f in summary.__struct_fields__})


def _require(conn: Connection, slug: str) -> Row[Any]:
    row = repo.article_by_slug(conn, slug)
    if row is None:
        raise NotFound(messages.ARTICLE_NOT_FOUND)
    return row


def list_articles(query: ListQuery, viewer: int | None) -> bytes:
    """A page of articles matching the filters, newest first, with the number of matches (encoded)."""

    def load() -> bytes:
        with get_db().read() as conn:
            rows, total = repo.list_articles(
                conn,
                tag=query.tag,
                author=query.author,
                favorited=query.favorited,
                limit=query.limit,
                offset=query.offset,
            )
            return _shared_page(conn, rows, total)

    key = list_key(query.tag, query.author, query.favorited, query.limit, query.offset)
    return cached(key, load, viewer, ARTICLE_FACTS)


def feed(page: Page, viewer: int) -> bytes:
    """A page of articles by the authors `viewer` follows, newest first, and their number (encoded).

    Which articles it holds depends on the viewer, so it is cached under the
    viewer's own key (versioned by their follows), never a shared one.
    """

    def load() -> bytes:
        with get_db().read() as conn:
            rows, total = repo.list_feed(conn, viewer, limit=page.limit, offset=page.offset)
            return _shared_page(conn, rows, total)

    return cached(feed_key(viewer, page.limit, page.offset), load, viewer, ARTICLE_FACTS)


def _shared_page(conn: Connection, rows: Sequence[Row[Any]], total: int) -> bytes:
    page = MultipleArticlesResponse(_summaries(conn, rows), total)
    return shared(
        page,
        {FAVORITED: [(r.slug, r.id) for r in rows], FOLLOWING: [(r.username, r.author_id) for r in rows]},
        {FAVORITES_COUNT: [(r.slug, r.id) for r in rows]},
    )


def _article_bytes(conn: Connection, slug: str) -> bytes:
    return _article_entry(conn, _require(conn, slug))


def _article_entry(conn: Connection, row: Row[Any]) -> bytes:
    article = SingleArticleResponse(_article(conn, row))
    return shared(
        article,
        {FAVORITED: [(row.slug, row.id)], FOLLOWING: [(row.username, row.author_id)]},
        {FAVORITES_COUNT: [(row.slug, row.id)]},
    )


def get(slug: str, viewer: int | None) -> bytes:
    """One article as `viewer` sees it (encoded); NotFound for an unknown slug."""

    def load() -> bytes:
        with get_db().read() as conn:
            return _article_bytes(conn, slug)

    return cached(article_key(slug), load, viewer, ARTICLE_FACTS)


def create(author_id: int, new: NewArticle, key: idempotency.Key | None = None) -> idempotency.Reply:
    """Publish an article under a fresh unique slug (a random suffix when the title's is taken).

    Unauthorized when the author's account was deleted meanwhile. With an idempotency `key` already
    used for this request: its stored answer, nothing created."""
    tags = sorted({tag.strip() for tag in new.tagList})
    base = slugify(new.title)
    db = get_db()
    with db.transaction() as conn:
        replay = idempotency.claim(conn, key)
        if replay is not None:
            return replay
        now = timefmt.now(db.dialect)
        candidates = [] if base in RESERVED_SLUGS else [base]
        candidates += [f"{base}-{secrets.token_hex(4)}" for _ in range(SLUG_ATTEMPTS)]
        with foreign_keys.referencing(conn, account=author_id):
            for slug in candidates:
                article_id = repo.insert_article(conn, slug, author_id, new.title, new.description, new.body, now)
                if article_id is not None:
                    break
            else:
                raise Unavailable()
        with foreign_keys.referencing(conn, article=article_id):
            repo.insert_tags(conn, article_id, tags)
        row = _require(conn, slug)
        article = personalize(_article_entry(conn, row), author_id, ARTICLE_FACTS, conn)
        idempotency.record(conn, key, article)
    get_cache().bump([*new_article_gens(row.username, tags), TAGS])
    return idempotency.Reply(article)


def _owned(conn: Connection, slug: str, viewer: int) -> Row[Any]:
    row = _require(conn, slug)
    if row.author_id != viewer:
        raise Forbidden()
    return row


def update(viewer: int, slug: str, changes: UpdateArticle, if_match: ETags | None = None) -> bytes:
    """Change title, description or body; the slug stays, so links keep working.

    NotFound for an unknown slug, Forbidden unless `viewer` is the author,
    PreconditionFailed when `if_match` does not name the article's current ETag.
    """
    values = {name: getattr(changes, name) for name in ("title", "description", "body")}
    db = get_db()
    with db.transaction() as conn:
        row = _owned(conn, slug, viewer)
        if if_match and not if_match.contains(
            generate_etag(personalize(_article_bytes(conn, slug), viewer, ARTICLE_FACTS, conn))
        ):
            raise PreconditionFailed()
        repo.update_article(conn, row.id, {k: v for k, v in values.items() if v is not UNSET}, timefmt.now(db.dialect))
        article = personalize(_article_bytes(conn, slug), viewer, ARTICLE_FACTS, conn)
    get_cache().bump([article_gen(slug), LISTS])
    return article


def delete(viewer: int, slug: str) -> None:
    """Delete an article with its tags, favorites and comments; NotFound or Forbidden as for update."""
    with get_db().transaction() as conn:
        repo.delete_article(conn, _owned(conn, slug, viewer).id)
    get_cache().bump([article_gen(slug), comments_gen(slug), LISTS, TAGS])


def set_favorite(viewer: int, slug: str, favorite: bool) -> bytes:
    """Favorite or unfavorite (idempotent) and return the article with its new count.

    NotFound for an unknown slug or one deleted meanwhile, Unauthorized when the viewer's account was."""
    db = get_db()
    with db.transaction() as conn:
        row = _require(conn, slug)
        if favorite:
            with foreign_keys.referencing(conn, article=row.id, account=viewer):
                changed = repo.add_favorite(conn, viewer, row.id, timefmt.now(db.dialect))
        else:
            changed = repo.remove_favorite(conn, viewer, row.id)
        article = personalize(_article_bytes(conn, slug), viewer, ARTICLE_FACTS, conn)
        username = repo.username_of(conn, viewer) if changed else None
    if username is not None:  # a repeat changed no row: every cached entry is still right
        get_cache().bump([FAVORITES_COUNT.generation(row.id), favorites_gen(viewer), favorited_by_gen(username)])
    return article
