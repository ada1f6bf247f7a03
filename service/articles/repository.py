"""SQL for articles, tags and favorites. Functions take a connection and never commit.

Lists have one page statement per single filter, so each uses its own index
(EXPLAIN figures in BENCHMARKS.md); combined filters share one page statement.
A total reads counter rows kept by triggers (migration 0005), or for combined
filters counts along their indexes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, text

# Every statement is whole, so it can be found by name and pasted into psql.
SELECT_ARTICLE_BY_SLUG = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image, a.body
    FROM articles a JOIN users u ON u.id = a.author_id
    WHERE a.slug = :slug
    """
)

# One statement pair per single filter, each driven by its own index, so a
# page reads about `limit` index entries however rare or common the filter is.
# The page is cut from articles alone, then joined to its authors: an offset
# skips index entries only, not author lookups for every skipped row.
LIST_ALL = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM (
        SELECT id, slug, title, description, favorites_count, created_at, updated_at, author_id
        FROM articles ORDER BY id DESC LIMIT :limit OFFSET :offset
    ) a
    JOIN users u ON u.id = a.author_id
    ORDER BY a.id DESC
    """
)

# Totals come from counter rows kept by triggers in the writes' own transactions (migration 0005):
# one primary-key lookup per total, however many articles match. A missing row means 0.
COUNT_ALL = text("SELECT COALESCE((SELECT n FROM article_counts WHERE scope = 'all'), 0)")

LIST_BY_TAG = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM articles a JOIN users u ON u.id = a.author_id
    JOIN article_tags t ON t.article_id = a.id
    WHERE t.tag = :tag
    ORDER BY t.article_id DESC LIMIT :limit OFFSET :offset
    """
)

COUNT_BY_TAG = text("SELECT COALESCE((SELECT n FROM tag_counts WHERE tag = :tag), 0)")

LIST_BY_AUTHOR = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM articles a JOIN users u ON u.id = a.author_id
    WHERE a.author_id = (SELECT id FROM users WHERE username = :author)
    ORDER BY a.id DESC LIMIT :limit OFFSET :offset
    """
)

COUNT_BY_AUTHOR = text(
    """
    SELECT COALESCE((
        SELECT c.n FROM users u JOIN article_counts c ON c.scope = 'author:' || u.id WHERE u.username = :author
    ), 0)
    """
)

LIST_BY_FAVORITED = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM articles a JOIN users u ON u.id = a.author_id
    JOIN favorites f ON f.article_id = a.id
    WHERE f.user_id = (SELECT id FROM users WHERE username = :favorited)
    ORDER BY f.article_id DESC LIMIT :limit OFFSET :offset
    """
)

COUNT_BY_FAVORITED = text(
    """
    SELECT COALESCE((
        SELECT c.n FROM users u JOIN article_counts c ON c.scope = 'favorited:' || u.id
        WHERE u.username = :favorited
    ), 0)
    """
)

# Two or three filters at once: an absent filter is `:x IS NULL`, which
# PostgreSQL folds away (psycopg2 binds values client-side, as literals).
LIST_FILTERED = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM articles a JOIN users u ON u.id = a.author_id
    WHERE (:tag IS NULL OR a.id IN (SELECT t.article_id FROM article_tags t WHERE t.tag = :tag))
      AND (:author IS NULL OR a.author_id = (SELECT au.id FROM users au WHERE au.username = :author))
      AND (:favorited IS NULL OR a.id IN (
            SELECT f.article_id FROM favorites f
            WHERE f.user_id = (SELECT fu.id FROM users fu WHERE fu.username = :favorited)))
    ORDER BY a.id DESC LIMIT :limit OFFSET :offset
    """
)

# Two or three filters at once are counted, not kept (a counter per combination would be a row per
# tag x author x favoriter). Each combination has its own statement, without `:x IS NULL OR`: an OR
# around a subquery keeps PostgreSQL from turning it into a join, and it hashed every article. As
# written, one filter's index drives and the others are probed by key, so a count reads at most the
# index entries of the filters it combines, never a whole table (EXPLAIN at 100,000 articles:
# bench/recorded/2026-11-29-explain-counts.txt). Favorites and tag links need no articles row for
# that: their foreign keys cascade.
COUNT_BY_TAG_AUTHOR = text(
    """
    SELECT COUNT(*) FROM articles a
    WHERE a.author_id = (SELECT id FROM users WHERE username = :author)
      AND EXISTS (SELECT 1 FROM article_tags t WHERE t.article_id = a.id AND t.tag = :tag)
    """
)

COUNT_BY_TAG_FAVORITED = text(
    """
    SELECT COUNT(*) FROM favorites f
    WHERE f.user_id = (SELECT id FROM users WHERE username = :favorited)
      AND EXISTS (SELECT 1 FROM article_tags t WHERE t.article_id = f.article_id AND t.tag = :tag)
    """
)

COUNT_BY_AUTHOR_FAVORITED = text(
    """
    SELECT COUNT(*) FROM favorites f JOIN articles a ON a.id = f.article_id
    WHERE f.user_id = (SELECT id FROM users WHERE username = :favorited)
      AND a.author_id = (SELECT id FROM users WHERE username = :author)
    """
)

COUNT_BY_TAG_AUTHOR_FAVORITED = text(
    """
    SELECT COUNT(*) FROM favorites f JOIN articles a ON a.id = f.article_id
    WHERE f.user_id = (SELECT id FROM users WHERE username = :favorited)
      AND a.author_id = (SELECT id FROM users WHERE username = :author)
      AND EXISTS (SELECT 1 FROM article_tags t WHERE t.article_id = a.id AND t.tag = :tag)
    """
)

# Pages by the filters given; two or three share LIST_FILTERED.
_LIST_STATEMENTS = {
    (): LIST_ALL,
    ("tag",): LIST_BY_TAG,
    ("author",): LIST_BY_AUTHOR,
    ("favorited",): LIST_BY_FAVORITED,
}

# Totals by the filters given: every combination has its own.
_COUNT_STATEMENTS = {
    (): COUNT_ALL,
    ("tag",): COUNT_BY_TAG,
    ("author",): COUNT_BY_AUTHOR,
    ("favorited",): COUNT_BY_FAVORITED,
    ("tag", "author"): COUNT_BY_TAG_AUTHOR,
    ("tag", "favorited"): COUNT_BY_TAG_FAVORITED,
    ("author", "favorited"): COUNT_BY_AUTHOR_FAVORITED,
    ("tag", "author", "favorited"): COUNT_BY_TAG_AUTHOR_FAVORITED,
}

LIST_FEED = text(
    """
    SELECT a.id, a.slug, a.title, a.description, a.favorites_count, a.created_at, a.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM articles a JOIN users u ON u.id = a.author_id
    WHERE a.author_id IN (SELECT fo.followee_id FROM follows fo WHERE fo.follower_id = :viewer)
    ORDER BY a.id DESC LIMIT :limit OFFSET :offset
    """
)

# The sum of the followed authors' counters: one primary-key lookup per followed author, not one
# per article. (As a join on the built key, the planner hashes every counter row instead.)
COUNT_FEED = text(
    """
    SELECT COALESCE(SUM((SELECT c.n FROM article_counts c WHERE c.scope = 'author:' || fo.followee_id)), 0)
    FROM follows fo
    WHERE fo.follower_id = :viewer
    """
)

SELECT_TAGS_OF = text(
    "SELECT article_id, tag FROM article_tags WHERE article_id IN :ids ORDER BY article_id, tag"
).bindparams(bindparam("ids", expanding=True))

INSERT_ARTICLE = text(
    """
    INSERT INTO articles (slug, author_id, title, description, body, created_at, updated_at)
    VALUES (:slug, :author_id, :title, :description, :body, :now, :now)
    ON CONFLICT (slug) DO NOTHING
    RETURNING id
    """
)

INSERT_ARTICLE_TAG = text("INSERT INTO article_tags (article_id, tag) VALUES (:article_id, :tag)")

UPDATE_ARTICLE = text(
    """
    UPDATE articles SET
        title = COALESCE(:title, title),
        description = COALESCE(:description, description),
        body = COALESCE(:body, body),
        updated_at = :now
    WHERE id = :id
    """
)

DELETE_ARTICLE = text("DELETE FROM articles WHERE id = :id")

# The favorite row and the counter change in one transaction: the counter moves
# only when a row was really inserted or deleted, so it always equals the rows.
INSERT_FAVORITE = text(
    """
    INSERT INTO favorites (user_id, article_id, created_at) VALUES (:user_id, :article_id, :now)
    ON CONFLICT DO NOTHING
    RETURNING article_id
    """
)

DELETE_FAVORITE = text(
    "DELETE FROM favorites WHERE user_id = :user_id AND article_id = :article_id RETURNING article_id"
)

ADD_TO_FAVORITES_COUNT = text("UPDATE articles SET favorites_count = favorites_count + :delta WHERE id = :id")

# A favorite or unfavorite locks its article's row first, as the article's delete does before its
# cascade reaches the favorites: in the other order an unfavorite (favorite row, then article row)
# and a delete (article row, then favorite rows) deadlocked. The counter rows of migration 0005
# come after both. PostgreSQL only: SQLite runs one writer at a time and has no row locks.
LOCK_ARTICLE = text("SELECT id FROM articles WHERE id = :id FOR NO KEY UPDATE")


def article_by_slug(conn: Connection, slug: str) -> Row[Any] | None:
    """The article with its author's public columns, or None."""
    return conn.execute(SELECT_ARTICLE_BY_SLUG, {"slug": slug}).first()


def list_articles(
    conn: Connection, *, tag: str | None, author: str | None, favorited: str | None, limit: int, offset: int
) -> tuple[list[Row[Any]], int]:
    """One page of matching articles, newest first, and the total number of matches."""
    filters = {"tag": tag, "author": author, "favorited": favorited}
    given = tuple(name for name, value in filters.items() if value is not None)
    page = _LIST_STATEMENTS.get(given, LIST_FILTERED)
    rows = conn.execute(page, {**filters, "limit": limit, "offset": offset}).all()
    total = conn.execute(_COUNT_STATEMENTS[given], {name: filters[name] for name in given}).scalar_one()
    return list(rows), int(total)


def list_feed(conn: Connection, viewer: int, *, limit: int, offset: int) -> tuple[list[Row[Any]], int]:
    """One page of articles by authors `viewer` follows, newest first, and their total."""
    rows = conn.execute(LIST_FEED, {"viewer": viewer, "limit": limit, "offset": offset}).all()
    total = conn.execute(COUNT_FEED, {"viewer": viewer}).scalar_one()
    return list(rows), int(total)


def tags_of(conn: Connection, article_ids: Sequence[int]) -> dict[int, list[str]]:
    """Sorted tag lists for all `article_ids`, in one statement."""
    tags: dict[int, list[str]] = defaultdict(list)
    if article_ids:
        for article_id, tag in conn.execute(SELECT_TAGS_OF, {"ids": list(article_ids)}):
            tags[article_id].append(tag)
    return tags


def insert_article(
    conn: Connection, slug: str, author_id: int, title: str, description: str, body: str, now: Any
) -> int | None:
    """The new article's id, or None when `slug` is taken."""
    params = {
        "slug": slug,
        "author_id": author_id,
        "title": title,
        "description": description,
        "body": body,
        "now": now,
    }
    return conn.execute(INSERT_ARTICLE, params).scalar_one_or_none()


def insert_tags(conn: Connection, article_id: int, tags: Sequence[str]) -> None:
    if tags:
        conn.execute(INSERT_ARTICLE_TAG, [{"article_id": article_id, "tag": tag} for tag in tags])


def update_article(conn: Connection, article_id: int, changes: dict[str, str], now: Any) -> None:
    """Set the fields in `changes` (title, description, body); others keep their value."""
    params = {"id": article_id, "now": now, "title": None, "description": None, "body": None, **changes}
    conn.execute(UPDATE_ARTICLE, params)


def delete_article(conn: Connection, article_id: int) -> None:
    conn.execute(DELETE_ARTICLE, {"id": article_id})


def add_favorite(conn: Connection, user_id: int, article_id: int, now: Any) -> bool:
    """Favorite once; True when a row was added (and the counter moved)."""
    _lock_article(conn, article_id)
    added = conn.execute(INSERT_FAVORITE, {"user_id": user_id, "article_id": article_id, "now": now}).first()
    if added is not None:
        conn.execute(ADD_TO_FAVORITES_COUNT, {"id": article_id, "delta": 1})
    return added is not None


def remove_favorite(conn: Connection, user_id: int, article_id: int) -> bool:
    """Unfavorite; True when a row was removed (and the counter moved)."""
    _lock_article(conn, article_id)
    removed = conn.execute(DELETE_FAVORITE, {"user_id": user_id, "article_id": article_id}).first()
    if removed is not None:
        conn.execute(ADD_TO_FAVORITES_COUNT, {"id": article_id, "delta": -1})
    return removed is not None


def _lock_article(conn: Connection, article_id: int) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(LOCK_ARTICLE, {"id": article_id})


SELECT_USERNAME = text("SELECT username FROM users WHERE id = :id")


def username_of(conn: Connection, user_id: int) -> str | None:
    """The username of `user_id`, or None when the account is gone."""
    return conn.execute(SELECT_USERNAME, {"id": user_id}).scalar_one_or_none()
