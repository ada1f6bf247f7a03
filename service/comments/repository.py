"""SQL for comments. Functions take a connection and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, text

SELECT_COMMENTS_OF_ARTICLE = text(
    """
    SELECT c.id, c.article_id, c.body, c.created_at, c.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM comments c JOIN users u ON u.id = c.author_id
    WHERE c.article_id = :article_id
    ORDER BY c.id DESC
    LIMIT :limit OFFSET :offset
    """
)

COUNT_COMMENTS_OF_ARTICLE = text("SELECT COUNT(*) FROM comments WHERE article_id = :article_id")

SELECT_COMMENT = text(
    """
    SELECT c.id, c.article_id, c.body, c.created_at, c.updated_at,
           u.id AS author_id, u.username, u.bio, u.image
    FROM comments c JOIN users u ON u.id = c.author_id
    WHERE c.id = :id
    """
)

# What a new comment needs, in one statement: the article's id (NULL for an unknown slug) and the
# author's profile (NULL when the account is gone). Always one row.
SELECT_TARGET = text(
    """
    SELECT a.id AS article_id, u.username, u.bio, u.image
    FROM (SELECT 1) AS one
    LEFT JOIN articles a ON a.slug = :slug
    LEFT JOIN users u ON u.id = :author_id
    """
)

INSERT_COMMENT = text(
    """
    INSERT INTO comments (article_id, author_id, body, created_at, updated_at)
    VALUES (:article_id, :author_id, :body, :now, :now)
    RETURNING id, created_at, updated_at
    """
)

DELETE_COMMENT = text("DELETE FROM comments WHERE id = :id")


def comments_of(conn: Connection, article_id: int, limit: int, offset: int) -> list[Row[Any]]:
    """A page of the article's comments with their authors, newest first."""
    params = {"article_id": article_id, "limit": limit, "offset": offset}
    return list(conn.execute(SELECT_COMMENTS_OF_ARTICLE, params))


def count_of(conn: Connection, article_id: int) -> int:
    """The number of all the article's comments."""
    return int(conn.execute(COUNT_COMMENTS_OF_ARTICLE, {"article_id": article_id}).scalar_one())


def comment(conn: Connection, comment_id: int) -> Row[Any] | None:
    return conn.execute(SELECT_COMMENT, {"id": comment_id}).first()


def target(conn: Connection, slug: str, author_id: int) -> Row[Any]:
    """(article_id, username, bio, image): the article of `slug` and the profile of `author_id`, each
    column None when its row does not exist."""
    return conn.execute(SELECT_TARGET, {"slug": slug, "author_id": author_id}).one()


def insert_comment(conn: Connection, article_id: int, author_id: int, body: str, now: Any) -> Row[Any]:
    """The new comment's (id, created_at, updated_at)."""
    params = {"article_id": article_id, "author_id": author_id, "body": body, "now": now}
    return conn.execute(INSERT_COMMENT, params).one()


def delete_comment(conn: Connection, comment_id: int) -> None:
    conn.execute(DELETE_COMMENT, {"id": comment_id})
