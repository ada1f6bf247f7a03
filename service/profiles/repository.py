"""SQL for profiles and follows. Functions take a connection and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, text

SELECT_PROFILE = text(
    """
    SELECT u.id, u.username, u.bio, u.image,
           EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = :viewer AND f.followee_id = u.id) AS following
    FROM users u
    WHERE u.username = :username
    """
)

INSERT_FOLLOW = text(
    """
    INSERT INTO follows (follower_id, followee_id, created_at)
    VALUES (:follower, :followee, :now)
    ON CONFLICT DO NOTHING
    """
)

DELETE_FOLLOW = text("DELETE FROM follows WHERE follower_id = :follower AND followee_id = :followee")


def profile(conn: Connection, username: str, viewer: int | None) -> Row[Any] | None:
    """The user's public row with `following` for `viewer`, or None."""
    return conn.execute(SELECT_PROFILE, {"username": username, "viewer": viewer}).first()


def follow(conn: Connection, follower: int, followee: int, now: Any) -> None:
    """Idempotent: following twice keeps one row."""
    conn.execute(INSERT_FOLLOW, {"follower": follower, "followee": followee, "now": now})


def unfollow(conn: Connection, follower: int, followee: int) -> None:
    conn.execute(DELETE_FOLLOW, {"follower": follower, "followee": followee})
