from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from service.api.schemas import NO_NUL

Username = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="1-40 characters: letters, digits, '_' and '-' (it appears in URLs).",
        extra={"rule": "must be 1-40 letters, digits, '_' or '-'"},
    ),
]
Email = Annotated[
    str,
    Meta(
        min_length=3,
        max_length=254,
        pattern=r"^[^@\s\x00]+@[^@\s\x00]+$",
        description="Compared case-insensitively.",
        extra={"pattern": "must be an address like name@example.com"},
    ),
]
NewPassword = Annotated[
    str,
    Meta(
        min_length=8,
        max_length=256,
        pattern=NO_NUL,
        description="8-256 characters.",
        extra={"rule": "must be 8-256 characters, without NUL characters"},
    ),
]
Password = Annotated[str, Meta(min_length=1, max_length=256)]
Bio = Annotated[str, Meta(max_length=4096, pattern=NO_NUL)]
Image = Annotated[str, Meta(max_length=2048, pattern=NO_NUL, description="URL of the profile image.")]


class NewUser(msgspec.Struct, forbid_unknown_fields=True):
    username: Username
    email: Email
    password: NewPassword


class NewUserRequest(msgspec.Struct, forbid_unknown_fields=True):
    user: NewUser


class LoginUser(msgspec.Struct, forbid_unknown_fields=True):
    email: Annotated[str, Meta(max_length=254, pattern=NO_NUL)]
    password: Password


class LoginUserRequest(msgspec.Struct, forbid_unknown_fields=True):
    user: LoginUser


class UpdateUser(msgspec.Struct, forbid_unknown_fields=True):
    email: Email | UnsetType = UNSET
    username: Username | UnsetType = UNSET
    password: NewPassword | UnsetType = UNSET
    bio: Bio | UnsetType | None = UNSET
    image: Image | UnsetType | None = UNSET


class UpdateUserRequest(msgspec.Struct, forbid_unknown_fields=True):
    user: UpdateUser


class User(msgspec.Struct):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None


class UserResponse(msgspec.Struct):
    user: User
