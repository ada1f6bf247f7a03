from __future__ import annotations

import msgspec


class Profile(msgspec.Struct):
    username: str
    bio: str | None
    image: str | None
    following: bool


class ProfileResponse(msgspec.Struct):
    profile: Profile
