"""Accounts: registration, login, the current user."""

from __future__ import annotations

from flask import Blueprint, Response

from service.api.endpoint import endpoint, respond
from service.api.schemas import GenericError
from service.security import idempotency, ratelimit
from service.security.auth import current_user_id
from service.users import service
from service.users.schemas import LoginUserRequest, NewUserRequest, UpdateUserRequest, UserResponse

bp = Blueprint("users", __name__)
TAG = "User and Authentication"


@bp.post("/users/login")
@ratelimit.limited(ratelimit.LOGIN_ADDRESS, ratelimit.LOGIN_ACCOUNT)
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
@ratelimit.limited(ratelimit.REGISTER_ADDRESS)
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
