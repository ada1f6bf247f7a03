from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from service.profiles.schemas import Profile
from service.schemas import NO_NUL

CommentBody = Annotated[str, Meta(min_length=1, max_length=10_000, pattern=NO_NUL)]


class CommentPage(msgspec.Struct):
    limit: Annotated[int, Meta(ge=1, le=500, description="Comments per page (1-500).")] = 100
    offset: Annotated[int, Meta(ge=0, le=100_000, description="Comments to skip (0-100000).")] = 0


class NewComment(msgspec.Struct, forbid_unknown_fields=True):
    body: CommentBody


class NewCommentRequest(msgspec.Struct, forbid_unknown_fields=True):
    comment: NewComment


class Comment(msgspec.Struct):
    id: int
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    body: str
    author: Profile


class SingleCommentResponse(msgspec.Struct):
    comment: Comment


class MultipleCommentsResponse(msgspec.Struct):
    comments: list[Comment]
