"""Tokens, password hashing off the gevent hub, and the auth decorators.

Tokens are HS256 JWTs whose `sub` is the user id; `exp` is required. `ver` is the
account's token version when the token was issued (a password change increments it;
tokens from before versions existed have none and count as 0). Argon2id
hashing takes ~20 ms of CPU; run on the hub's thread it would stall every other
request of the worker, so it runs in a small per-process OS thread pool (the
C code releases the GIL) while the calling greenlet waits cooperatively.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, NamedTuple, TypeVar, cast

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, g, request
from gevent.event import AsyncResult
from gevent.threadpool import ThreadPool
from sqlalchemy import exc as sa_exc

from service.api.errors import Unauthorized, messages

ALGORITHM = "HS256"
MAX_USER_ID = 2**63 - 1
F = TypeVar("F", bound=Callable[..., Any])


class Passwords:
    """Argon2id hashing in a per-process thread pool, created on first use (after fork)."""

    def __init__(self, time_cost: int, memory_kib: int, threads: int) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1, type=Type.ID)
        self._threads = threads
        self._pool: ThreadPool | None = None

    def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self._pool is None:
            self._pool = ThreadPool(self._threads)
        return self._pool.apply(fn, args)

    def hash(self, password: str) -> str:
        return cast(str, self._run(self._hasher.hash, password))

    def verify(self, password_hash: str, password: str) -> bool:
        """True when `password` matches; never raises for a wrong or malformed hash."""
        return bool(self._run(self._verify, password_hash, password))

    def _verify(self, password_hash: str, password: str) -> bool:
        # Runs in the pool thread: an exception escaping there is printed by gevent's hub with its
        # traceback, i.e. ~10 log lines for every wrong password. A mismatch is an answer, not an error.
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False


def init_app(app: Flask) -> None:
    app.extensions["verified_tokens"] = {}
    app.extensions["token_checks"] = {}  # token -> AsyncResult of its account check in flight
    app.extensions["passwords"] = Passwords(
        app.config["PASSWORD_TIME_COST"], app.config["PASSWORD_MEMORY_KIB"], app.config["PASSWORD_HASH_THREADS"]
    )


def passwords() -> Passwords:
    p: Passwords = current_app.extensions["passwords"]
    return p


def issue_token(user_id: int, version: int) -> str:
    """A signed token for `user_id` at the account's token `version`, already known valid to this
    process (the account was just read or written)."""
    now = int(time.time())
    expires = now + int(current_app.config["JWT_TTL_SECONDS"])
    claims = {"sub": str(user_id), "iat": now, "exp": expires, "ver": version}
    token = jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm=ALGORITHM)
    _remember(token, Verified(user_id, expires, now, version, time.monotonic()))
    return token


# Verified tokens per process: token -> Verified. Checking an HS256 signature
# costs ~20 us per request; a dict hit costs ~0.1 us. Only tokens that passed
# verification enter, expiry is re-checked on every hit, and the dict is
# emptied when full so it cannot grow without bound. An entry is trusted for
# TOKEN_RECHECK_SECONDS; then the account is read again (one primary-key
# lookup), so a password change, which moves the account's token version and so
# revokes every token issued before it, or a deleted account ends older tokens in
# every worker within that time.
VERIFIED_TOKENS_MAX = 10_000


class Verified(NamedTuple):
    user_id: int
    expires: int
    issued: int
    version: int  # the `ver` claim
    checked: float  # time.monotonic() of the last account check


def decode_token(token: str) -> int:
    """The user id in a valid, unrevoked token; raises Unauthorized for anything else."""
    verified: dict[str, Verified] = current_app.extensions["verified_tokens"]
    hit = verified.get(token)
    if hit is not None and hit.expires > time.time():
        if time.monotonic() - hit.checked < float(current_app.config["TOKEN_RECHECK_SECONDS"]):
            return hit.user_id
        entry = hit
    else:
        hit = None
        entry = _verify_signature(token)
    # One account read per token per period and worker: concurrent requests with this token wait
    # for the read in flight and share its answer (never the stale entry: it may be revoked).
    checks: dict[str, AsyncResult] = current_app.extensions["token_checks"]
    pending = checks.get(token)
    if pending is not None:
        user_id: int = pending.get()
        return user_id
    pending = checks[token] = AsyncResult()
    try:
        user_id = _checked(token, entry, hit)
    except BaseException as exc:
        pending.set_exception(exc)
        raise
    finally:
        checks.pop(token, None)
    pending.set(user_id)
    return user_id


def _checked(token: str, entry: Verified, hit: Verified | None) -> int:
    """`entry`'s user id once the account allows it; remembers or forgets the token accordingly."""
    try:
        _check_account(entry)
    except Unauthorized:
        current_app.extensions["verified_tokens"].pop(token, None)
        raise
    except (sa_exc.OperationalError, sa_exc.TimeoutError, sa_exc.InterfaceError):
        if hit is None:
            raise
        # The database is unreachable: keep the last answer rather than fail reads that do not
        # need it (cached pages); writes fail on their own. Checked again after the period.
        _remember(token, hit._replace(checked=time.monotonic()))
        return hit.user_id
    _remember(token, entry._replace(checked=time.monotonic()))
    return entry.user_id


def _verify_signature(token: str) -> Verified:
    try:
        claims = jwt.decode(
            token,
            current_app.config["SECRET_KEY"],
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
        )
        user_id = int(claims["sub"])
        expires = int(claims["exp"])
        issued = int(claims.get("iat", 0))
        version = claims.get("ver", 0)
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise Unauthorized() from exc
    if type(version) is not int:
        raise Unauthorized()
    # Ids are positive 64-bit integers; anything else names no user (and overflows SQLite).
    if not 0 < user_id <= MAX_USER_ID:
        raise Unauthorized()
    return Verified(user_id, expires, issued, version, 0.0)


def _check_account(entry: Verified) -> None:
    """Unauthorized when the account is gone or its password changed after the token was issued."""
    from service.storage.db import get_db
    from service.users import repository as users

    with get_db().read(entry.user_id) as conn:
        state = users.token_state(conn, entry.user_id)
    if state is None:
        raise Unauthorized(messages.ACCOUNT_GONE)
    # The version is exact. tokens_valid_after is the `iat` cut-off of password changes made before
    # migration 0004 (or by a replica of the previous release during the deploy); nothing moves it now.
    if entry.version != state.token_version or entry.issued < state.tokens_valid_after:
        raise Unauthorized(messages.TOKEN_REVOKED)


def _remember(token: str, entry: Verified) -> None:
    verified: dict[str, Verified] = current_app.extensions["verified_tokens"]
    if len(verified) >= VERIFIED_TOKENS_MAX:
        verified.clear()
    verified[token] = entry


def forget_user(user_id: int) -> None:
    """Drop this process's verified tokens of `user_id` (after a password change revokes them)."""
    verified: dict[str, Verified] = current_app.extensions["verified_tokens"]
    for token in [t for t, entry in verified.items() if entry.user_id == user_id]:
        verified.pop(token, None)


def recently_verified(verified: Mapping[str, Verified], recheck: float, authorization: str) -> int | None:
    """The user id of the token in `authorization` if this worker verified it and checked its account
    within `recheck` seconds (`verified` is the app's table); None otherwise (`decode_token` decides)."""
    scheme, _, token = authorization.strip().partition(" ")
    hit = verified.get(token.strip())
    if hit is None or scheme.lower() not in ("token", "bearer"):
        return None
    if hit.expires <= time.time() or time.monotonic() - hit.checked >= recheck:
        return None
    return hit.user_id


def token_from_header() -> str | None:
    """The token in the Authorization header; None without the header, Unauthorized when malformed."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() not in ("token", "bearer") or not token.strip():
        raise Unauthorized()
    return token.strip()


def viewer_id() -> int | None:
    """The authenticated user's id, or None for an anonymous request."""
    return cast("int | None", g.get("user_id"))


def current_user_id() -> int:
    """The authenticated user's id; Unauthorized for an anonymous request."""
    user_id = viewer_id()
    if user_id is None:
        raise Unauthorized()
    return user_id


def auth_required(fn: F) -> F:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = token_from_header()
        if token is None:
            raise Unauthorized()
        g.user_id = decode_token(token)
        return fn(*args, **kwargs)

    return cast(F, wrapper)


def auth_optional(fn: F) -> F:
    """A missing token means anonymous; a present but invalid one is still 401."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = token_from_header()
        g.user_id = decode_token(token) if token is not None else None
        return fn(*args, **kwargs)

    return cast(F, wrapper)
