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

INSERT_COMMENT = text(
    """
    INSERT INTO comments (article_id, author_id, body, created_at, updated_at)
    VALUES (:article_id, :author_id, :body, :now, :now)
    RETURNING id
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


def insert_comment(conn: Connection, article_id: int, author_id: int, body: str, now: Any) -> int:
    """The new comment's id."""
    params = {"article_id": article_id, "author_id": author_id, "body": body, "now": now}
    return int(conn.execute(INSERT_COMMENT, params).scalar_one())


def delete_comment(conn: Connection, comment_id: int) -> None:
    conn.execute(DELETE_COMMENT, {"id": comment_id})
