"""Comments on articles."""

from __future__ import annotations

from flask import Blueprint, Response, url_for

from service.api.endpoint import endpoint, no_content, respond
from service.api.schemas import GenericError
from service.comments import service
from service.comments.cache_keys import next_link
from service.comments.schemas import (
    MAX_OFFSET,
    CommentPage,
    MultipleCommentsResponse,
    NewCommentRequest,
    SingleCommentResponse,
)
from service.security import idempotency, ratelimit
from service.security.auth import current_user_id, viewer_id

bp = Blueprint("comments", __name__)
# Comments written per authenticated user (spam).
COMMENTS = ratelimit.Rule(
    "RATELIMIT_COMMENTS_USER", "comments", ratelimit.authenticated_user, "30/minute;1000/day", "300/minute;10000/day"
)
TAG = "Comments"
NEXT_LINK = {
    "description": 'RFC 8288 link to the next page, `<...?limit=L&offset=O>; rel="next"` (a URL relative to '
    "this one); absent on the last page.",
    "schema": {"type": "string"},
}


@bp.get("/articles/<slug:slug>/comments")
@endpoint(
    "Comments on an article",
    operation_id="GetArticleComments",
    tag=TAG,
    auth="optional",
    query=CommentPage,
    responses={200: MultipleCommentsResponse},
    description="Newest first, at most `limit` per page (default 100), where the RealWorld spec returns every "
    "comment: `commentsCount` is the number of all the article's comments, and while there are more the "
    '`Link` header holds the next page (`rel="next"`). Follow it until it is absent.',
    response_headers={200: {"Link": NEXT_LINK}},
)
def list_comments(slug: str, query: CommentPage) -> Response:
    body, total = service.list_for(slug, query, viewer_id())
    resp = respond(body)
    following = query.offset + query.limit
    if following < total and following <= MAX_OFFSET:
        url = url_for("comments.list_comments", slug=slug, limit=query.limit, offset=following)
        name, value = next_link(url)
        resp.headers[name] = value
    return resp


@bp.post("/articles/<slug:slug>/comments")
@ratelimit.limited(COMMENTS)
@endpoint(
    "Comment on an article",
    operation_id="CreateArticleComment",
    tag=TAG,
    auth="required",
    body=NewCommentRequest,
    responses={200: SingleCommentResponse},
    description="With `Idempotency-Key`, a retry creates nothing and replays the first answer.",
    headers=(idempotency.HEADER_PARAMETER,),
)
def add_comment(slug: str, body: NewCommentRequest) -> Response:
    user_id = current_user_id()
    key = idempotency.requested(user_id, body, 200)
    return idempotency.respond(service.add(user_id, slug, body.comment.body, key), 200)


@bp.delete("/articles/<slug:slug>/comments/<int:comment_id>")
@endpoint(
    "Delete a comment",
    tag=TAG,
    operation_id="DeleteArticleComment",
    auth="required",
    responses={204: None, 403: GenericError},
    description="Only the comment's author may delete it.",
    path={"comment_id": "The comment's `id`."},
)
def delete_comment(slug: str, comment_id: int) -> Response:
    service.delete(current_user_id(), slug, comment_id)
    return no_content()
