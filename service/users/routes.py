"""Accounts: registration, login, the current user."""

from __future__ import annotations

import hashlib
import hmac

import msgspec
from flask import Blueprint, Response, current_app
from werkzeug.exceptions import HTTPException

from service.api.endpoint import endpoint, request_body, respond
from service.api.schemas import GenericError
from service.security import idempotency, ratelimit
from service.security.auth import current_user_id
from service.users import service
from service.users.schemas import LoginUserRequest, NewUserRequest, UpdateUserRequest, UserResponse

bp = Blueprint("users", __name__)
TAG = "User and Authentication"


class _LoginEmail(msgspec.Struct):
    email: str


class _LoginProbe(msgspec.Struct):
    user: _LoginEmail


def login_account() -> str | None:
    """A keyed digest of the normalized login email (no email addresses in Redis); None without one.

    The body is read with the view's own reader (request_body: bounded by MAX_CONTENT_LENGTH,
    chunked or not, kept for the view), so any body the view accepts as a log-in names its account
    here, however it is framed or padded. None only for a body the view refuses before any password
    check (too large, not JSON, no email)."""
    try:
        email = msgspec.json.decode(request_body(), type=_LoginProbe).user.email
    except (HTTPException, msgspec.MsgspecError, RecursionError, UnicodeDecodeError, ValueError):
        return None
    secret = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(secret, email.strip().lower().encode(), hashlib.sha256).hexdigest()[:32]


# Log-in attempts per account (the email, case-insensitive), successful or not: brute force on
# one account. Also lets anyone delay a victim's log-in for up to an hour; keep it loose enough.
LOGIN_ACCOUNT = ratelimit.Rule("RATELIMIT_LOGIN_ACCOUNT", "login_account", login_account, "10/minute;50/hour")
# Log-in attempts per client address: one client trying many accounts (password spraying).
# An office or carrier NAT shares one address.
LOGIN_ADDRESS = ratelimit.Rule(
    "RATELIMIT_LOGIN_ADDRESS", "login_address", ratelimit.client_address, "30/minute;300/hour"
)
# Registrations per client address (account spam). Whether a refused registration (422: username
# or email taken, invalid input) counts: yes in production, since "email has already been taken"
# tells whether an account exists, so probing is exactly the failures, and counting only successes
# checks before and counts after the answer, so a burst of concurrent requests all pass before any
# is counted; no in development, where a person picking a username should not use up the budget.
REGISTER_ADDRESS = ratelimit.Rule(
    "RATELIMIT_REGISTER_ADDRESS",
    "register_address",
    ratelimit.client_address,
    "5/minute;30/hour",
    development="60/minute;1000/hour",
    count_failed=ratelimit.counts_failed("RATELIMIT_REGISTER_COUNT_FAILED", True, development=False),
)


@bp.post("/users/login")
@ratelimit.limited(LOGIN_ADDRESS, LOGIN_ACCOUNT)
@endpoint(
    "Log in with email and password",
    operation_id="Login",
    tag=TAG,
    body=LoginUserRequest,
    responses={200: UserResponse, 401: GenericError},
    description="Answers the user with a new token. A wrong email or password is 401, the same for both.",
)
def login(body: LoginUserRequest) -> Response:
    return respond(UserResponse(service.login(body.user.email, body.user.password)))


@bp.post("/users")
@ratelimit.limited(REGISTER_ADDRESS)
@endpoint(
    "Register a new user",
    operation_id="CreateUser",
    tag=TAG,
    body=NewUserRequest,
    responses={201: UserResponse},
    description="With `Idempotency-Key`, a retry creates nothing and replays the first answer with a fresh token.",
    headers=(idempotency.HEADER_PARAMETER,),
)
def register(body: NewUserRequest) -> Response:
    key = idempotency.requested(None, body, 201)
    return idempotency.respond(service.register(body.user, key), 201)


@bp.get("/user")
@endpoint(
    "Get the current user",
    tag=TAG,
    operation_id="GetCurrentUser",
    auth="required",
    responses={200: UserResponse},
    description="The account of the token, with a new token.",
)
def current_user() -> Response:
    return respond(UserResponse(service.current(current_user_id())))


@bp.put("/user")
@endpoint(
    "Update the current user",
    operation_id="UpdateCurrentUser",
    tag=TAG,
    auth="required",
    body=UpdateUserRequest,
    responses={200: UserResponse},
    description="Only the fields present are changed; `bio` and `image` may be set to null.",
)
def update_user(body: UpdateUserRequest) -> Response:
    return respond(UserResponse(service.update(current_user_id(), body.user)))
