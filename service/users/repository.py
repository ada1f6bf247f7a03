"""SQL for users. Functions take a connection and never commit."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, text

INSERT_USER = text(
    """
    INSERT INTO users (username, email, password_hash, created_at, updated_at)
    VALUES (:username, :email, :password_hash, :now, :now)
    ON CONFLICT DO NOTHING
    RETURNING id, username, email, bio, image
    """
)

SELECT_USER_BY_ID = text("SELECT id, username, email, bio, image, password_hash FROM users WHERE id = :id")

SELECT_USER_BY_EMAIL = text("SELECT id, username, email, bio, image, password_hash FROM users WHERE email = :email")

# Tokens issued (JWT `iat`, epoch seconds) before this are revoked; moved by a password change.
SELECT_TOKENS_VALID_AFTER = text("SELECT tokens_valid_after FROM users WHERE id = :id")

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
        tokens_valid_after = CASE WHEN :set_password THEN :tokens_valid_after ELSE tokens_valid_after END,
        bio = CASE WHEN :set_bio THEN :bio ELSE bio END,
        image = CASE WHEN :set_image THEN :image ELSE image END,
        updated_at = :now
    WHERE id = :id
    RETURNING id, username, email, bio, image
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


def tokens_valid_after(conn: Connection, user_id: int) -> int | None:
    """Epoch second before which the user's tokens are revoked; None when the user does not exist."""
    value = conn.execute(SELECT_TOKENS_VALID_AFTER, {"id": user_id}).scalar()
    return None if value is None else int(value)


def update_user(conn: Connection, user_id: int, changes: dict[str, Any], now: Any) -> Row[Any] | None:
    """Apply `changes` (any of username, email, password_hash, bio, image); the updated row.

    A new password_hash also revokes the tokens issued before `changes["tokens_valid_after"]`."""
    params: dict[str, Any] = {"id": user_id, "now": now, "tokens_valid_after": changes.get("tokens_valid_after", 0)}
    for name in ("username", "email", "password_hash", "bio", "image"):
        params[name] = changes.get(name)
        params["set_" + name.removesuffix("_hash")] = name in changes
    return conn.execute(UPDATE_USER, params).first()
