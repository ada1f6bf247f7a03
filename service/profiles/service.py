"""Use cases for public profiles and following."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row

from service.api import timefmt
from service.api.errors import Invalid, NotFound, messages
from service.caching.cache import cached, get_cache
from service.caching.personalize import shared
from service.profiles import repository as repo
from service.profiles.cache_keys import FOLLOWING, follows_gen, profile_key
from service.profiles.schemas import Profile, ProfileResponse
from service.storage import foreign_keys
from service.storage.db import get_db


def to_profile(row: Row[Any], following: bool) -> Profile:
    return Profile(username=row.username, bio=row.bio, image=row.image, following=following)


def get(username: str, viewer: int | None) -> bytes:
    """The profile as `viewer` sees it (encoded); NotFound for an unknown username."""

    def load() -> bytes:
        with get_db().read() as conn:
            row = repo.profile(conn, username, None)
        if row is None:
            raise NotFound(messages.PROFILE_NOT_FOUND)
        return shared(ProfileResponse(to_profile(row, False)), {FOLLOWING: [(row.username, row.id)]})

    return cached(profile_key(username), load, viewer, [FOLLOWING])


def set_following(viewer: int, username: str, following: bool) -> Profile:
    """Follow or unfollow `username` (idempotent).

    NotFound for an unknown username or one deleted meanwhile, Unauthorized when the viewer's account was."""
    db = get_db()
    with db.transaction() as conn:
        row = repo.profile(conn, username, viewer)
        if row is None:
            raise NotFound(messages.PROFILE_NOT_FOUND)
        if row.id == viewer and following:
            raise Invalid(messages.CANNOT_FOLLOW_SELF)
        if following:
            with foreign_keys.referencing(conn, profile=row.id, account=viewer):
                repo.follow(conn, viewer, row.id, timefmt.now(db.dialect))
        else:
            repo.unfollow(conn, viewer, row.id)
    get_cache().bump([follows_gen(viewer)])
    return to_profile(row, following)
