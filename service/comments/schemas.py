from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from service.api.schemas import NO_NUL
from service.profiles.schemas import Profile

CommentBody = Annotated[str, Meta(min_length=1, max_length=10_000, pattern=NO_NUL)]


MAX_OFFSET = 100_000


class CommentPage(msgspec.Struct):
    limit: Annotated[
        int,
        Meta(
            ge=1,
            le=500,
            description="Comments per page (1-500, default 100). While there are more, the `Link` header of "
            'the answer holds the next page (`rel="next"`).',
        ),
    ] = 100
    offset: Annotated[
        int, Meta(ge=0, le=MAX_OFFSET, description="Comments to skip, newest first (0-100000, default 0).")
    ] = 0


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
    # All the article's comments, not the page length (like `articlesCount`); not in the RealWorld
    # spec, which returns every comment, so that a client can tell whether it has them all.
    commentsCount: int  # noqa: N815
