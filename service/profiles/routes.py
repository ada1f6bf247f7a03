"""Public profiles and following."""

from __future__ import annotations

from flask import Blueprint, Response

from service.api.endpoint import endpoint, respond
from service.api.schemas import GenericError
from service.profiles import service
from service.profiles.schemas import ProfileResponse
from service.security import ratelimit
from service.security.auth import current_user_id, viewer_id

bp = Blueprint("profiles", __name__)
TAG = "Profile"
# Follows and unfollows per authenticated user, one bucket (spam, inflating counts).
FOLLOWS = ratelimit.Rule(
    "RATELIMIT_FOLLOWS_USER", "follows", ratelimit.authenticated_user, "60/minute;1000/day", "300/minute;10000/day"
)
USERNAME = {"username": "The user's username, as in `username` of a profile."}


@bp.get("/profiles/<username>")
@endpoint(
    "Get a profile",
    tag=TAG,
    operation_id="GetProfileByUsername",
    auth="optional",
    responses={200: ProfileResponse},
    description="With a token, `following` says whether the caller follows this user.",
    path=USERNAME,
)
def get_profile(username: str) -> Response:
    return respond(service.get(username, viewer_id()))


@bp.post("/profiles/<username>/follow")
@ratelimit.limited(FOLLOWS)
@endpoint(
    "Follow a user",
    operation_id="FollowUserByUsername",
    tag=TAG,
    auth="required",
    responses={200: ProfileResponse, 422: GenericError},
    description="Following yourself is refused (422). Following a user already followed changes nothing.",
    path=USERNAME,
)
def follow(username: str) -> Response:
    return respond(ProfileResponse(service.set_following(current_user_id(), username, True)))


@bp.delete("/profiles/<username>/follow")
@ratelimit.limited(FOLLOWS)
@endpoint(
    "Unfollow a user",
    tag=TAG,
    operation_id="UnfollowUserByUsername",
    auth="required",
    responses={200: ProfileResponse},
    description="Unfollowing a user not followed changes nothing.",
    path=USERNAME,
)
def unfollow(username: str) -> Response:
    return respond(ProfileResponse(service.set_following(current_user_id(), username, False)))
