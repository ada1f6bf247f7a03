"""Use cases for accounts: register, log in, read and update the current user."""

from __future__ import annotations

from typing import Any

from msgspec import UNSET
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from service import cache, timefmt
from service.auth import issue_token, passwords
from service.db import get_db
from service.errors import Invalid, Unauthorized, messages
from service.users import repository as repo
from service.users.schemas import NewUser, UpdateUser, User

# Verified against when the email is unknown, so that a wrong email and a wrong
# password take the same time and give the same answer (no user enumeration).
_DUMMY_HASH: dict[str, str] = {}


def _user(row: Row[Any]) -> User:
    return User(email=row.email, token=issue_token(row.id), username=row.username, bio=row.bio, image=row.image)


def _conflict(username: str | None, email: str | None, except_id: int = 0) -> Invalid:
    db = get_db()
    with db.read() as conn:
        username_taken, email_taken = repo.taken(conn, username, email, except_id)
    errors = [messages.USERNAME_TAKEN] if username_taken else []
    errors += [messages.EMAIL_TAKEN] if email_taken else []
    # Taken between our write and this read and then freed again: still a conflict.
    return Invalid(*(errors or [messages.USERNAME_TAKEN]))


def register(new: NewUser) -> User:
    """Create an account; Invalid when the username or email is taken."""
    password_hash = passwords().hash(new.password)
    email = new.email.lower()
    db = get_db()
    with db.transaction() as conn:
        row = repo.insert_user(conn, new.username, email, password_hash, timefmt.now(db.dialect))
    if row is None:
        raise _conflict(new.username, email)
    return _user(row)


def login(email: str, password: str) -> User:
    """The user with a fresh token; Unauthorized for an unknown email or a wrong password alike."""
    db = get_db()
    with db.read() as conn:
        row = repo.user_by_email(conn, email.lower())
    if row is None:
        if "hash" not in _DUMMY_HASH:
            _DUMMY_HASH["hash"] = passwords().hash("not a real password")
        passwords().verify(_DUMMY_HASH["hash"], password)
        raise Unauthorized(messages.LOGIN_FAILED)
    if not passwords().verify(row.password_hash, password):
        raise Unauthorized(messages.LOGIN_FAILED)
    return _user(row)


def current(user_id: int) -> User:
    """The authenticated user; Unauthorized when the account no longer exists."""
    with get_db().read() as conn:
        row = repo.user_by_id(conn, user_id)
    if row is None:
        raise Unauthorized()
    return _user(row)


def update(user_id: int, changes: UpdateUser) -> User:
    """Apply the fields present in `changes`; Invalid when the new username or email is taken."""
    values: dict[str, Any] = {}
    if changes.username is not UNSET:
        values["username"] = changes.username
    if changes.email is not UNSET:
        values["email"] = changes.email.lower()
    if changes.bio is not UNSET:
        values["bio"] = changes.bio
    if changes.image is not UNSET:
        values["image"] = changes.image
    if changes.password is not UNSET:
        values["password_hash"] = passwords().hash(changes.password)
    db = get_db()
    try:
        with db.transaction() as conn:
            row = repo.update_user(conn, user_id, values, timefmt.now(db.dialect))
    except IntegrityError:
        raise _conflict(values.get("username"), values.get("email"), except_id=user_id) from None
    if row is None:
        raise Unauthorized()
    if {"username", "bio", "image"} & values.keys():
        cache.get_cache().bump([cache.PROFILES])
    return _user(row)
