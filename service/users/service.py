"""Use cases for accounts: register, log in, read and update the current user."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from service.api import timefmt
from service.api.endpoint import encode
from service.api.errors import Invalid, Unauthorized, messages
from service.caching.cache import get_cache
from service.profiles.cache_keys import PROFILES
from service.security import idempotency
from service.security.auth import forget_user, issue_token, passwords
from service.storage.db import get_db
from service.users import repository as repo
from service.users.schemas import NewUser, UpdateUser, User, UserResponse

# Verified against when the email is unknown, so that a wrong email and a wrong
# password take the same time and give the same answer (no user enumeration).
_DUMMY_HASH: dict[str, str] = {}


def _user(row: Row[Any]) -> User:
    return User(
        email=row.email,
        token=issue_token(row.id, row.token_version),
        username=row.username,
        bio=row.bio,
        image=row.image,
    )


def _conflict(username: str | None, email: str | None, except_id: int = 0) -> Invalid:
    db = get_db()
    with db.read(primary=True) as conn:  # the write that just failed saw the primary
        username_taken, email_taken = repo.taken(conn, username, email, except_id)
    errors = [messages.USERNAME_TAKEN] if username_taken else []
    errors += [messages.EMAIL_TAKEN] if email_taken else []
    # Taken between our write and this read and then freed again: still a conflict.
    return Invalid(*(errors or [messages.USERNAME_TAKEN]))


class _Taken(Exception):
    """Raised inside the registration transaction so that a claimed idempotency key rolls back too."""


def register(new: NewUser, key: idempotency.Key | None = None) -> idempotency.Reply:
    """Create an account (an encoded UserResponse); Invalid when the username or email is taken.

    With an idempotency `key` already used for this request: the stored answer with a fresh token.
    The stored copy has no token: a bearer credential at rest would outlive its use."""
    password_hash = passwords().hash(new.password)
    email = new.email.lower()
    db = get_db()
    try:
        with db.transaction() as conn:
            replay = idempotency.claim(conn, key)
            if replay is None:
                row = repo.insert_user(conn, new.username, email, password_hash, timefmt.now(db.dialect))
                if row is None:
                    raise _Taken
                user, new_id = _user(row), row.id
                idempotency.record(conn, key, encode(UserResponse(msgspec.structs.replace(user, token=""))))
    except _Taken:
        raise _conflict(new.username, email) from None
    if replay is not None:
        return _with_fresh_token(replay, email, new.password)
    db.remember_write(new_id)
    return idempotency.Reply(encode(UserResponse(user)))


def _with_fresh_token(replay: idempotency.Reply, email: str, password: str) -> idempotency.Reply:
    """The stored registration answer with a new token; Invalid unless the email and password still log in.

    A replay is thus no more than a login: a password changed since revokes it, and an email that
    moved to another account cannot hand out that account's token."""
    with get_db().read(primary=True) as conn:
        row = repo.user_by_email(conn, email)
    if row is None or not passwords().verify(row.password_hash, password):
        raise Invalid(idempotency.messages.ACCOUNT_CHANGED)
    stored = msgspec.json.decode(replay.body, type=UserResponse)
    user = msgspec.structs.replace(stored.user, token=issue_token(row.id, row.token_version))
    return idempotency.Reply(encode(UserResponse(user)), replay.replayed_status)


def login(email: str, password: str) -> User:
    """The user with a fresh token; Unauthorized for an unknown email or a wrong password alike."""
    db = get_db()
    # On the primary: nothing names whose writes a login must see (an account registered a moment ago).
    with db.read(primary=True) as conn:
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
        # Also increments the account's token version in the same UPDATE: every token issued
        # before is refused (auth.decode_token); the token in the answer carries the new version.
        values["password_hash"] = passwords().hash(changes.password)
    db = get_db()
    try:
        with db.transaction() as conn:
            row = repo.update_user(conn, user_id, values, timefmt.now(db.dialect))
    except IntegrityError:
        raise _conflict(values.get("username"), values.get("email"), except_id=user_id) from None
    if row is None:
        raise Unauthorized()
    if "password_hash" in values:
        forget_user(user_id)
    if {"username", "bio", "image"} & values.keys():
        get_cache().bump([PROFILES])
    return _user(row)
