"""What the shared cache knows of profiles: keys, generations and the `following` fact.

PROFILES is global: any edit of a username, bio or image shows in every article, comment
and profile entry, so the users domain bumps it and those domains' keys depend on it.
"""

from __future__ import annotations

from sqlalchemy import text

from service.caching import cache, fastpath
from service.caching.personalize import Fact

PROFILES = "profiles"

# `following` on every profile object (an article's author, a comment's, a profile), by username.
FOLLOWING = Fact(
    "u",
    match="username",
    field="following",
    query=text("SELECT followee_id AS id FROM follows WHERE follower_id = :viewer AND followee_id IN :ids"),
    members=text("SELECT followee_id AS id FROM follows WHERE follower_id = :viewer"),
    generation=lambda viewer: follows_gen(viewer),
)


def follows_gen(user_id: int) -> str:
    """Whom `user_id` follows: bumped on their follow and unfollow."""
    return f"follows:{user_id}"


@cache.key_family("p3")  # "p" and "p2" entries (no header, or one without flag offsets) never match
def profile_key(username: str) -> list[str]:
    return [PROFILES]


# Anonymous hits are answered ahead of Flask (service.caching.fastpath).
fastpath.serve(
    "profiles.get_profile",
    fastpath.Route(
        lambda v, q, viewer: profile_key(v["username"]), None, "private, no-cache", "Authorization", facts=(FOLLOWING,)
    ),
)
