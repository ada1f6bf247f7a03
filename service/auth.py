"""Tokens, password hashing off the gevent hub, and the auth decorators.

Tokens are HS256 JWTs whose `sub` is the user id; `exp` is required. Argon2id
hashing takes ~20 ms of CPU; run on the hub's thread it would stall every other
request of the worker, so it runs in a small per-process OS thread pool (the
C code releases the GIL) while the calling greenlet waits cooperatively.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

import jwt
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from flask import Flask, current_app, g, request
from gevent.threadpool import ThreadPool

from service.errors import Unauthorized

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
    app.extensions["passwords"] = Passwords(
        app.config["PASSWORD_TIME_COST"], app.config["PASSWORD_MEMORY_KIB"], app.config["PASSWORD_HASH_THREADS"]
    )


def passwords() -> Passwords:
    p: Passwords = current_app.extensions["passwords"]
    return p


def issue_token(user_id: int) -> str:
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "exp": now + int(current_app.config["JWT_TTL_SECONDS"])}
    return jwt.encode(claims, current_app.config["SECRET_KEY"], algorithm=ALGORITHM)


# Verified tokens per process: token -> (user id, expiry). Checking an HS256
# signature costs ~20 us per request; a dict hit costs ~0.1 us. Only tokens that
# passed verification enter, expiry is re-checked on every hit, and the dict
# is emptied when full so it cannot grow without bound.
VERIFIED_TOKENS_MAX = 10_000


def decode_token(token: str) -> int:
    """The user id in a valid token; raises Unauthorized for anything else."""
    verified: dict[str, tuple[int, int]] = current_app.extensions["verified_tokens"]
    hit = verified.get(token)
    if hit is not None and hit[1] > time.time():
        return hit[0]
    try:
        claims = jwt.decode(
            token,
            current_app.config["SECRET_KEY"],
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub"]},
        )
        user_id = int(claims["sub"])
        expires = int(claims["exp"])
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise Unauthorized() from exc
    # Ids are positive 64-bit integers; anything else names no user (and overflows SQLite).
    if not 0 < user_id <= MAX_USER_ID:
        raise Unauthorized()
    if len(verified) >= VERIFIED_TOKENS_MAX:
        verified.clear()
    verified[token] = (user_id, expires)
    return user_id


def _token_from_header() -> str | None:
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
        token = _token_from_header()
        if token is None:
            raise Unauthorized()
        g.user_id = decode_token(token)
        return fn(*args, **kwargs)

    return cast(F, wrapper)


def auth_optional(fn: F) -> F:
    """A missing token means anonymous; a present but invalid one is still 401."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _token_from_header()
        g.user_id = decode_token(token) if token is not None else None
        return fn(*args, **kwargs)

    return cast(F, wrapper)
