"""Articles, the feed and favorites."""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, request
from werkzeug.routing import BaseConverter

from service.api import httpcache
from service.api.endpoint import endpoint, no_content, respond
from service.api.schemas import GenericError, Page
from service.articles import service
from service.articles.schemas import (
    ListQuery,
    MultipleArticlesResponse,
    NewArticleRequest,
    SingleArticleResponse,
    UpdateArticleRequest,
)
from service.security import idempotency, ratelimit
from service.security.auth import current_user_id, viewer_id

bp = Blueprint("articles", __name__)
# Writes per authenticated user (spam, inflating counts); favorite and unfavorite share one bucket.
ARTICLES = ratelimit.Rule(
    "RATELIMIT_ARTICLES_USER", "articles", ratelimit.authenticated_user, "10/minute;200/day", "120/minute;5000/day"
)
FAVORITES = ratelimit.Rule(
    "RATELIMIT_FAVORITES_USER", "favorites", ratelimit.authenticated_user, "60/minute;2000/day", "300/minute;10000/day"
)


class SlugConverter(BaseConverter):
    """`<slug:...>`: an article slug, i.e. one path segment that is not a reserved slug.

    No article ever gets a reserved slug, and `/api/articles/feed` is the feed: without this,
    `PUT`/`DELETE /api/articles/feed` would reach the article routes (and `Allow` would list them)."""

    part_isolating = True
    regex = r"(?!(?:" + "|".join(re.escape(slug) for slug in sorted(service.RESERVED_SLUGS)) + r")\Z)[^/]+"
    # Published as the path parameter's schema by service.api.openapi. The exclusion is told, not encoded
    # as `not: {enum: [...]}`: by OpenAPI's own rule the concrete `/api/articles/feed` path is matched
    # before this template, so such a value never names this parameter in the first place.
    openapi_schema: dict[str, Any] = {
        "type": "string",
        "description": "The article's slug (never " + ", ".join(sorted(service.RESERVED_SLUGS)) + ").",
    }


@bp.get("/articles")
@endpoint(
    "List articles",
    operation_id="GetArticles",
    tag="Articles",
    auth="optional",
    query=ListQuery,
    responses={200: MultipleArticlesResponse},
    description="Newest first. `articlesCount` is the number of all matches, not the page length.",
)
def list_articles(query: ListQuery) -> Response:
    return respond(service.list_articles(query, viewer_id()))


@bp.get("/articles/feed")
@endpoint(
    "Articles by followed authors",
    operation_id="GetArticlesFeed",
    tag="Articles",
    auth="required",
    query=Page,
    responses={200: MultipleArticlesResponse},
    description="Newest first.",
)
def feed(query: Page) -> Response:
    return respond(service.feed(query, current_user_id()))


@bp.post("/articles")
@ratelimit.limited(ARTICLES)
@endpoint(
    "Create an article",
    operation_id="CreateArticle",
    tag="Articles",
    auth="required",
    body=NewArticleRequest,
    responses={201: SingleArticleResponse},
    description="The slug is made from the title, with a random suffix when it is already taken. "
    "With `Idempotency-Key`, a retry creates nothing and replays the first answer.",
    headers=(idempotency.HEADER_PARAMETER,),
)
def create_article(body: NewArticleRequest) -> Response:
    user_id = current_user_id()
    key = idempotency.requested(user_id, body, 201)
    return idempotency.respond(service.create(user_id, body.article, key), 201)


@bp.get("/articles/<slug:slug>")
@endpoint(
    "Get an article",
    tag="Articles",
    operation_id="GetArticle",
    auth="optional",
    responses={200: SingleArticleResponse},
    description="With a token, `favorited` and `author.following` are for the caller.",
)
def get_article(slug: str) -> Response:
    return respond(service.get(slug, viewer_id()))


@bp.put("/articles/<slug:slug>")
@endpoint(
    "Update an article",
    operation_id="UpdateArticle",
    tag="Articles",
    auth="required",
    body=UpdateArticleRequest,
    responses={200: SingleArticleResponse, 403: GenericError, 412: GenericError},
    description="Only the author may update. The slug does not change with the title. With `If-Match: <ETag of "
    "the article as you read it>` the update happens only if nobody changed it since (412 otherwise).",
    headers=(httpcache.IF_MATCH_PARAMETER,),
)
def update_article(slug: str, body: UpdateArticleRequest) -> Response:
    if_match = request.if_match if "If-Match" in request.headers else None
    return respond(service.update(current_user_id(), slug, body.article, if_match))


@bp.delete("/articles/<slug:slug>")
@endpoint(
    "Delete an article",
    tag="Articles",
    operation_id="DeleteArticle",
    auth="required",
    responses={204: None, 403: GenericError},
    description="Only the author may delete; its comments and favorites go with it.",
)
def delete_article(slug: str) -> Response:
    service.delete(current_user_id(), slug)
    return no_content()


@bp.post("/articles/<slug:slug>/favorite")
@ratelimit.limited(FAVORITES)
@endpoint(
    "Favorite an article",
    tag="Favorites",
    operation_id="CreateArticleFavorite",
    auth="required",
    responses={200: SingleArticleResponse},
    description="Answers the article with its new count. Favoriting it again changes nothing.",
)
def favorite(slug: str) -> Response:
    return respond(service.set_favorite(current_user_id(), slug, True))


@bp.delete("/articles/<slug:slug>/favorite")
@ratelimit.limited(FAVORITES)
@endpoint(
    "Unfavorite an article",
    tag="Favorites",
    operation_id="DeleteArticleFavorite",
    auth="required",
    responses={200: SingleArticleResponse},
    description="Answers the article with its new count. Unfavoriting an article not favorited changes nothing.",
)
def unfavorite(slug: str) -> Response:
    return respond(service.set_favorite(current_user_id(), slug, False))
