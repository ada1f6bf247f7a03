from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from service.schemas import NO_NUL

Username = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=40,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="1-40 characters: letters, digits, '_' and '-' (it appears in URLs).",
    ),
]
Email = Annotated[
    str,
    Meta(
        min_length=3, max_length=254, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$", description="Compared case-insensitively."
    ),
]
NewPassword = Annotated[str, Meta(min_length=8, max_length=256, pattern=NO_NUL, description="8-256 characters.")]
Password = Annotated[str, Meta(min_length=1, max_length=256)]
Bio = Annotated[str, Meta(max_length=4096, pattern=NO_NUL)]
Image = Annotated[str, Meta(max_length=2048, pattern=NO_NUL, description="URL of the profile image.")]


class NewUser(msgspec.Struct):
    username: Username
    email: Email
    password: NewPassword


class NewUserRequest(msgspec.Struct):
    user: NewUser


class LoginUser(msgspec.Struct):
    email: Annotated[str, Meta(max_length=254, pattern=NO_NUL)]
    password: Password


class LoginUserRequest(msgspec.Struct):
    user: LoginUser


class UpdateUser(msgspec.Struct):
    email: Email | UnsetType = UNSET
    username: Username | UnsetType = UNSET
    password: NewPassword | UnsetType = UNSET
    bio: Bio | UnsetType | None = UNSET
    image: Image | UnsetType | None = UNSET


class UpdateUserRequest(msgspec.Struct):
    user: UpdateUser


class User(msgspec.Struct):
    email: str
    token: str
    username: str
    bio: str | None
    image: str | None


class UserResponse(msgspec.Struct):
    user: User
