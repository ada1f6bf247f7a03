"""SQL for users. Functions take a connection and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, text

INSERT_USER = text(
    """
    INSERT INTO users (username, email, password_hash, created_at, updated_at)
    VALUES (:username, :email, :password_hash, :now, :now)
    ON CONFLICT DO NOTHING
    RETURNING id, username, email, bio, image, token_version
    """
)

SELECT_USER_BY_ID = text(
    "SELECT id, username, email, bio, image, password_hash, token_version FROM users WHERE id = :id"
)

SELECT_USER_BY_EMAIL = text(
    "SELECT id, username, email, bio, image, password_hash, token_version FROM users WHERE email = :email"
)

# A token is valid while its `ver` claim equals token_version (moved by a password change) and its
# `iat` is not before tokens_valid_after (frozen since migration 0004; see that file).
SELECT_TOKEN_STATE = text("SELECT token_version, tokens_valid_after FROM users WHERE id = :id")

SELECT_TAKEN = text(
    """
    SELECT username = :username AS username_taken, email = :email AS email_taken
    FROM users
    WHERE (username = :username OR email = :email) AND id <> :except_id
    """
)

# A flag per optional field, so that "absent" (keep) and null (clear) differ.
UPDATE_USER = text(
    """
    UPDATE users SET
        username = CASE WHEN :set_username THEN :username ELSE username END,
        email = CASE WHEN :set_email THEN :email ELSE email END,
        password_hash = CASE WHEN :set_password THEN :password_hash ELSE password_hash END,
        token_version = CASE WHEN :set_password THEN token_version + 1 ELSE token_version END,
        bio = CASE WHEN :set_bio THEN :bio ELSE bio END,
        image = CASE WHEN :set_image THEN :image ELSE image END,
        updated_at = :now
    WHERE id = :id
    RETURNING id, username, email, bio, image, token_version
    """
)


def insert_user(conn: Connection, username: str, email: str, password_hash: str, now: Any) -> Row[Any] | None:
    """The new user's row, or None when the username or email is taken."""
    params = {"username": username, "email": email, "password_hash": password_hash, "now": now}
    return conn.execute(INSERT_USER, params).first()


def user_by_id(conn: Connection, user_id: int) -> Row[Any] | None:
    return conn.execute(SELECT_USER_BY_ID, {"id": user_id}).first()


def user_by_email(conn: Connection, email: str) -> Row[Any] | None:
    return conn.execute(SELECT_USER_BY_EMAIL, {"email": email}).first()


def taken(conn: Connection, username: str | None, email: str | None, except_id: int = 0) -> tuple[bool, bool]:
    """(username taken, email taken) by a user other than `except_id`."""
    params = {"username": username, "email": email, "except_id": except_id}
    rows = conn.execute(SELECT_TAKEN, params).all()
    return any(bool(r.username_taken) for r in rows), any(bool(r.email_taken) for r in rows)


def token_state(conn: Connection, user_id: int) -> Row[Any] | None:
    """(token_version, tokens_valid_after) of the user; None when the user does not exist."""
    return conn.execute(SELECT_TOKEN_STATE, {"id": user_id}).first()


def update_user(conn: Connection, user_id: int, changes: dict[str, Any], now: Any) -> Row[Any] | None:
    """Apply `changes` (any of username, email, password_hash, bio, image); the updated row.

    A new password_hash also increments token_version, which revokes every token issued before."""
    params: dict[str, Any] = {"id": user_id, "now": now}
    for name in ("username", "email", "password_hash", "bio", "image"):
        params[name] = changes.get(name)
        params["set_" + name.removesuffix("_hash")] = name in changes
    return conn.execute(UPDATE_USER, params).first()
