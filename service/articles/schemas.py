from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, UnsetType

from service.api.schemas import NO_NUL, Page
from service.profiles.schemas import Profile

MAX_TAGS = 10

Title = Annotated[str, Meta(min_length=1, max_length=256, pattern=NO_NUL)]
Description = Annotated[str, Meta(max_length=1024, pattern=NO_NUL)]
Body = Annotated[str, Meta(max_length=100_000, pattern=NO_NUL)]
# At least one character that is not whitespace; no commas or NUL bytes anywhere.
TAG_PATTERN = r"^[^\x00,]*[^\x00,\s][^\x00,]*$"
Tag = Annotated[
    str,
    Meta(
        min_length=1,
        max_length=64,
        pattern=TAG_PATTERN,
        description="No commas.",
        extra={"label": "tags", "pattern": "may not contain commas or be only spaces"},
    ),
]
TagList = Annotated[list[Tag], Meta(max_length=MAX_TAGS, description=f"At most {MAX_TAGS} tags.")]
FilterValue = Annotated[str, Meta(max_length=256, pattern=NO_NUL)]


class NewArticle(msgspec.Struct, forbid_unknown_fields=True):
    title: Title
    description: Description
    body: Body
    tagList: TagList = msgspec.field(default_factory=list)  # noqa: N815 - the API's field name


class NewArticleRequest(msgspec.Struct, forbid_unknown_fields=True):
    article: NewArticle


class UpdateArticle(msgspec.Struct, forbid_unknown_fields=True):
    """Tags are set when the article is created; a `tagList` here is refused, not silently dropped."""

    title: Title | UnsetType = UNSET
    description: Description | UnsetType = UNSET
    body: Body | UnsetType = UNSET


class UpdateArticleRequest(msgspec.Struct, forbid_unknown_fields=True):
    article: UpdateArticle


class ListQuery(Page, kw_only=True):
    # Absent means no filter; a query string has no null (service.api.openapi publishes these as plain strings).
    tag: Annotated[FilterValue, Meta(description="Only articles with this tag.")] | None = None
    author: Annotated[FilterValue, Meta(description="Only articles by this author (username).")] | None = None
    favorited: Annotated[FilterValue, Meta(description="Only articles this user (username) favorited.")] | None = None


class Article(msgspec.Struct):
    slug: str
    title: str
    description: str
    body: str
    tagList: list[str]  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    favorited: bool
    favoritesCount: int  # noqa: N815
    author: Profile


class ArticleSummary(msgspec.Struct):
    """An article in a list: everything but the body."""

    slug: str
    title: str
    description: str
    tagList: list[str]  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    favorited: bool
    favoritesCount: int  # noqa: N815
    author: Profile


class SingleArticleResponse(msgspec.Struct):
    article: Article


class MultipleArticlesResponse(msgspec.Struct):
    articles: list[ArticleSummary]
    articlesCount: int  # noqa: N815
