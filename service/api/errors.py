"""The API's one error shape, `{"errors": {"body": [...]}}`, for every failure.

Error classes carry their status; user-facing strings live in `messages`.
Handlers are registered once in `register_error_handlers`, including for
werkzeug's own 404/405/413 and for unexpected exceptions.
"""

from __future__ import annotations

import logging
import math

import orjson
from flask import Flask, Response
from sqlalchemy import exc as sa_exc
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class messages:  # noqa: N801 - a namespace of constants
    UNAUTHORIZED = "missing or invalid authorization token"
    LOGIN_FAILED = "email or password is invalid"
    FORBIDDEN = "you are not allowed to change this resource"
    USER_NOT_FOUND = "user not found"
    PROFILE_NOT_FOUND = "profile not found"
    ARTICLE_NOT_FOUND = "article not found"
    COMMENT_NOT_FOUND = "comment not found"
    USERNAME_TAKEN = "username has already been taken"
    EMAIL_TAKEN = "email has already been taken"
    CANNOT_FOLLOW_SELF = "you cannot follow yourself"
    UNAVAILABLE = "service temporarily unavailable, retry shortly"
    OVERLOADED = "the server is busy; retry after the number of seconds in the Retry-After header"
    INTERNAL = "internal server error"
    TOO_LARGE = "request body is too large"
    ACCOUNT_GONE = "the account of this token no longer exists"
    TOKEN_REVOKED = "this token was revoked by a password change; log in again"  # noqa: S105
    CONFLICT = "the request conflicts with the current state; retry"
    PRECONDITION_FAILED = "the resource has changed since you read it (If-Match does not match)"
    UNSUPPORTED_MEDIA_TYPE = "the body must be JSON, sent with Content-Type: application/json"
    RATE_LIMITED = "too many requests; retry after the number of seconds in the Retry-After header"


class APIError(Exception):
    status = 422
    message = "invalid request"
    headers: dict[str, str] = {}

    def __init__(self, *errors: str) -> None:
        super().__init__(*errors)
        self.errors = list(errors) or [self.message]


class Invalid(APIError):
    status = 422


class Unauthorized(APIError):
    status = 401
    message = messages.UNAUTHORIZED
    headers = {"WWW-Authenticate": "Token"}


class Forbidden(APIError):
    status = 403
    message = messages.FORBIDDEN


class NotFound(APIError):
    status = 404
    message = "not found"


class PreconditionFailed(APIError):
    status = 412
    message = messages.PRECONDITION_FAILED


class TooManyRequests(APIError):
    status = 429
    message = messages.RATE_LIMITED

    def __init__(self, *errors: str, retry_after: float) -> None:
        super().__init__(*errors)
        # Whole seconds until the limit's window resets, at least 1.
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}


class UnsupportedMediaType(APIError):
    status = 415
    message = messages.UNSUPPORTED_MEDIA_TYPE


class Unavailable(APIError):
    status = 503
    message = messages.UNAVAILABLE
    # Seconds a client should wait before retrying.
    headers = {"Retry-After": "1"}


class Overloaded(Unavailable):
    """Shed before any work: the worker's shared-cache connections were all busy (service.caching.cache)."""

    message = messages.OVERLOADED


def error_response(status: int, errors: list[str], headers: dict[str, str] | None = None) -> Response:
    resp = Response(orjson.dumps({"errors": {"body": errors}}), status=status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def api_error_response(err: APIError) -> Response:
    """The error shape for `err`, for code that answers without raising (e.g. a limiter callback)."""
    return error_response(err.status, err.errors, err.headers)


_api_error = api_error_response


def _http_error(err: HTTPException) -> Response:
    status = err.code or 500
    text = messages.TOO_LARGE if status == 413 else (err.description or err.name)
    headers = {}
    if status == 405 and err.response is None:
        allowed = getattr(err, "valid_methods", None)
        if allowed:
            headers["Allow"] = ", ".join(allowed)
    return error_response(status, [text], headers)


def _database_unavailable(err: Exception) -> Response:
    # Pool exhausted, database unreachable, connection dropped, statement timed
    # out: all mean "try again soon", not "the server is broken".
    log.warning("database unavailable: %s", err.__class__.__name__, exc_info=err)
    return _api_error(Unavailable())


def _integrity(err: sa_exc.IntegrityError) -> Response:
    # Services check what they can before writing; what reaches here is a race.
    # A foreign key whose referenced row vanished is answered by the service
    # (service.storage.foreign_keys), which knows whether it was an article (404) or
    # the token's account (401). One that gets here was not placed: guessing
    # "account gone" would sign the client out, so it is a conflict to retry,
    # and the retry's own lookup gives the precise answer.
    log.warning("integrity error: %s", err.orig)
    return _api_error(Invalid(messages.CONFLICT))


def _unexpected(err: Exception) -> Response:
    log.exception("unhandled error", exc_info=err)
    return error_response(500, [messages.INTERNAL])


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(APIError, _api_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(sa_exc.IntegrityError, _integrity)
    app.register_error_handler(sa_exc.TimeoutError, _database_unavailable)
    app.register_error_handler(sa_exc.OperationalError, _database_unavailable)
    app.register_error_handler(sa_exc.InterfaceError, _database_unavailable)
    app.register_error_handler(Exception, _unexpected)
