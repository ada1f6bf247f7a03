"""Idempotency-Key: a retried create answers like the first attempt instead of creating twice.

`POST /api/users`, `/api/articles` and `/api/articles/{slug}/comments` accept an optional
`Idempotency-Key` header. Its row is inserted first in the create's own transaction and completed
with the response in that same transaction, so the resource and its key commit together or not at
all. A key counts within a scope: the signed-in user, or for registration (anonymous, so no user to
tell clients apart) the request's fingerprint itself, so two clients that happen to pick one key for
different registrations never meet, while a retry of the same body still finds its first answer. A
concurrent duplicate (same scope and key) waits on the row's unique-key lock (PostgreSQL) or
on BEGIN IMMEDIATE (SQLite), then finds the committed row and replays it; if the first rolled back,
it runs itself. Only successes are stored: a refused request leaves nothing, so its retry re-executes.

The fingerprint is an HMAC (keyed with SECRET_KEY) of the method, the path and the validated body
re-encoded canonically: a registration's body holds a password, and a plain hash of it kept in the
database would be an offline guessing target. Rows older than IDEMPOTENCY_TTL_SECONDS no longer
count and are deleted in small batches by the writes themselves, never by a scan per request.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from flask import Response, current_app, request
from sqlalchemy import Connection, text

from service.api import timefmt
from service.api.endpoint import respond as json_response
from service.api.errors import Invalid, Unavailable

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# An anonymous request's scope is this prefix and its fingerprint: the key counts per request body.
ANONYMOUS = "anonymous:"
KEY_PATTERN = r"^[!-~]{1,255}$"  # visible ASCII, 0x21-0x7E
_VALID_KEY = re.compile(r"[!-~]{1,255}")
# On average one recorded key in PURGE_EVERY also deletes up to PURGE_BATCH expired rows: about six
# deletions per insert, so the table keeps up with any write rate, and a purge stays a short walk
# of the created_at index.
PURGE_EVERY = 16
PURGE_BATCH = 100


class messages:  # noqa: N801 - a namespace of constants, as in service.api.errors
    INVALID_KEY = "Idempotency-Key must be 1-255 visible ASCII characters (no spaces)"
    KEY_REUSED = (
        "this Idempotency-Key was already used for a different request (method, path or body); "
        "send a new key for a new request"
    )
    INCOMPLETE = "the request with this Idempotency-Key left no stored answer; retry"
    ACCOUNT_CHANGED = (
        "the account registered with this Idempotency-Key has changed its email or password since; log in instead"
    )


# Published on each keyed operation by service.api.openapi (the view reads the header itself).
HEADER_PARAMETER: dict[str, Any] = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": KEY_PATTERN},
    "description": "Makes a retry safe: a unique value per intended create (e.g. a UUID), 1-255 visible ASCII "
    "characters. A repeat of the same request with the same key creates nothing and gets the first answer "
    "again, with `Idempotent-Replayed: true`; a concurrent repeat waits for the first. Keys are per client: "
    "per signed-in user, where the same key with a different method, path or body is 422; on registration, "
    "which has no user yet, per request body (method, path and body as parsed), so the same key with a "
    "different body is simply another key and never another client's answer. A malformed key is 422. A "
    "refused request stores nothing. Keys are remembered for IDEMPOTENCY_TTL_SECONDS (24 h by default).",
}

# Inserts the key, or takes over an expired row; returns nothing when a live row holds the key. On
# PostgreSQL a row inserted by a transaction still running makes this wait until that one ends.
CLAIM_KEY = text(
    """
    INSERT INTO idempotency_keys (scope, key, fingerprint, created_at)
    VALUES (:scope, :key, :fingerprint, :now)
    ON CONFLICT (scope, key) DO UPDATE
        SET fingerprint = excluded.fingerprint, status = NULL, body = NULL, created_at = excluded.created_at
        WHERE idempotency_keys.created_at < :expired_before
    RETURNING scope
    """
)

SELECT_KEY = text("SELECT fingerprint, status, body FROM idempotency_keys WHERE scope = :scope AND key = :key")

COMPLETE_KEY = text("UPDATE idempotency_keys SET status = :status, body = :body WHERE scope = :scope AND key = :key")

# Oldest first, a bounded batch. SKIP LOCKED: a purge never waits for (or deadlocks with) a
# transaction that holds an old row; the next purge gets it.
PURGE_EXPIRED_PG = text(
    """
    DELETE FROM idempotency_keys
    WHERE (scope, key) IN (
        SELECT scope, key FROM idempotency_keys
        WHERE created_at < :expired_before
        ORDER BY created_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    """
)

PURGE_EXPIRED_SQLITE = text(
    """
    DELETE FROM idempotency_keys
    WHERE (scope, key) IN (
        SELECT scope, key FROM idempotency_keys
        WHERE created_at < :expired_before
        ORDER BY created_at
        LIMIT :limit
    )
    """
)


@dataclass(frozen=True)
class Key:
    """An Idempotency-Key as sent with one request, and the success status its route answers."""

    scope: str
    key: str
    fingerprint: str
    status: int


@dataclass(frozen=True)
class Reply:
    """A create's answer: the encoded body, and the stored status when it is a replay."""

    body: bytes
    replayed_status: int | None = None


def requested(user_id: int | None, body: Any, status: int) -> Key | None:
    """The current request's Idempotency-Key (None without the header); Invalid when malformed.

    `body` is the validated request body; `status` is what the route answers on success."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not _VALID_KEY.fullmatch(raw):
        raise Invalid(messages.INVALID_KEY)
    digest = fingerprint(request.method, request.path, body)
    scope = ANONYMOUS + digest if user_id is None else f"user:{user_id}"
    return Key(scope, raw, digest, status)


def fingerprint(method: str, path: str, body: Any) -> str:
    """HMAC-SHA256 (hex) of the method, the path and `body` encoded canonically (sorted keys)."""
    message = f"{method} {path}\n".encode("utf-8", "backslashreplace") + msgspec.json.encode(body, order="sorted")
    return hmac.new(current_app.config["SECRET_KEY"].encode(), message, hashlib.sha256).hexdigest()


def _bind(conn: Connection, moment: datetime) -> Any:
    return moment if conn.dialect.name == "postgresql" else timefmt.iso(moment)


def _expired_before(conn: Connection, now: datetime) -> Any:
    return _bind(conn, now - timedelta(seconds=int(current_app.config["IDEMPOTENCY_TTL_SECONDS"])))


def claim(conn: Connection, key: Key | None) -> Reply | None:
    """Take `key` in `conn`'s transaction (call it first): None means go ahead and `record`.

    A Reply is the stored answer of an earlier identical request; Invalid when the key was used for
    a different request. With no key, None."""
    if key is None:
        return None
    now = datetime.now(UTC)
    params = {
        "scope": key.scope,
        "key": key.key,
        "fingerprint": key.fingerprint,
        "now": _bind(conn, now),
        "expired_before": _expired_before(conn, now),
    }
    if conn.execute(CLAIM_KEY, params).first() is not None:
        return None
    row = conn.execute(SELECT_KEY, {"scope": key.scope, "key": key.key}).first()
    if row is None or row.status is None:
        # Cannot happen while every claim commits with its answer; never guess one.
        raise Unavailable(messages.INCOMPLETE)
    if not hmac.compare_digest(row.fingerprint, key.fingerprint):
        raise Invalid(messages.KEY_REUSED)
    return Reply(bytes(row.body), replayed_status=int(row.status))


def record(conn: Connection, key: Key | None, body: bytes) -> None:
    """Store the answer of a claimed `key` in the same transaction; now and then purge expired keys."""
    if key is None:
        return
    conn.execute(COMPLETE_KEY, {"scope": key.scope, "key": key.key, "status": key.status, "body": body})
    if secrets.randbelow(PURGE_EVERY) == 0:
        purge_expired(conn)


def purge_expired(conn: Connection, limit: int | None = None) -> int:
    """Delete up to `limit` (default PURGE_BATCH) expired keys, oldest first; how many were deleted."""
    statement = PURGE_EXPIRED_PG if conn.dialect.name == "postgresql" else PURGE_EXPIRED_SQLITE
    params = {"expired_before": _expired_before(conn, datetime.now(UTC)), "limit": limit or PURGE_BATCH}
    result = conn.execute(statement, params)
    return int(result.rowcount)


def respond(reply: Reply, status: int) -> Response:
    """The JSON response for `reply`: `status`, or the stored one with `Idempotent-Replayed: true`."""
    if reply.replayed_status is None:
        return json_response(reply.body, status)
    resp = json_response(reply.body, reply.replayed_status)
    resp.headers[REPLAYED_HEADER] = "true"
    return resp
