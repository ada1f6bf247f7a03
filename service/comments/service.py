"""Use cases for comments on articles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row

from service.api import timefmt
from service.api.endpoint import encode
from service.api.errors import Forbidden, NotFound, messages
from service.articles import repository as articles_repo
from service.caching.cache import cached, get_cache
from service.caching.personalize import shared
from service.comments import repository as repo
from service.comments.cache_keys import comments_gen, comments_key
from service.comments.schemas import Comment, CommentPage, MultipleCommentsResponse, SingleCommentResponse
from service.profiles.cache_keys import FOLLOWING
from service.profiles.schemas import Profile
from service.profiles.service import to_profile
from service.security import idempotency
from service.storage import foreign_keys
from service.storage.db import get_db

# Ids are 64-bit; a larger number in the URL cannot name a comment.
MAX_ID = 2**63 - 1


def _shared(payload: Any, rows: Sequence[Row[Any]]) -> bytes:
    return shared(payload, {FOLLOWING: [(r.username, r.author_id) for r in rows]})


def _comments(rows: Sequence[Row[Any]]) -> list[Comment]:
    """Comments as an anonymous reader sees them; `personalize` sets `following`."""
    return [
        Comment(
            id=row.id,
            createdAt=timefmt.iso(row.created_at),
            updatedAt=timefmt.iso(row.updated_at),
            body=row.body,
            author=to_profile(row, False),
        )
        for row in rows
    ]


def _article_id(conn: Connection, slug: str) -> int:
    row = articles_repo.article_by_slug(conn, slug)
    if row is None:
        raise NotFound(messages.ARTICLE_NOT_FOUND)
    return int(row.id)


def list_for(slug: str, page: CommentPage, viewer: int | None) -> tuple[bytes, int]:
    """(a page of the article's comments, newest first, encoded; the number of all of them).

    NotFound for an unknown slug."""

    def load() -> bytes:
        with get_db().read() as conn:
            article_id = _article_id(conn, slug)
            rows = repo.comments_of(conn, article_id, page.limit, page.offset)
            total = repo.count_of(conn, article_id)
        # The count leads the cache entry, so a page served from the cache still says if there is more.
        return b"%d\n" % total + _shared(MultipleCommentsResponse(_comments(rows), total), rows)

    key = comments_key(slug, page.limit, page.offset)
    total, _, body = cached(key, load, viewer, [FOLLOWING]).partition(b"\n")
    return body, int(total)


def add(author_id: int, slug: str, body: str, key: idempotency.Key | None = None) -> idempotency.Reply:
    """Comment on an article; NotFound for an unknown slug or one deleted meanwhile, Unauthorized
    when the author's account was deleted meanwhile.

    With an idempotency `key` already used for this request: its stored answer, nothing created."""
    db = get_db()
    with db.transaction() as conn:
        replay = idempotency.claim(conn, key)
        if replay is not None:
            return replay
        target = repo.target(conn, slug, author_id)
        if target.article_id is None:
            raise NotFound(messages.ARTICLE_NOT_FOUND)
        if target.username is None:
            raise foreign_keys.ACCOUNT.gone()
        with foreign_keys.referencing(conn, article=target.article_id, account=author_id):
            row = repo.insert_comment(conn, target.article_id, author_id, body, timefmt.now(db.dialect))
        # The reader is the author, and following oneself is refused: `following` is false.
        author = Profile(username=target.username, bio=target.bio, image=target.image, following=False)
        comment = encode(
            SingleCommentResponse(
                Comment(
                    id=row.id,
                    createdAt=timefmt.iso(row.created_at),
                    updatedAt=timefmt.iso(row.updated_at),
                    body=body,
                    author=author,
                )
            )
        )
        idempotency.record(conn, key, comment)
    get_cache().bump([comments_gen(slug)])
    return idempotency.Reply(comment)


def delete(viewer: int, slug: str, comment_id: int) -> None:
    """Delete a comment: NotFound unless it belongs to the article, Forbidden unless `viewer` wrote it."""
    with get_db().transaction() as conn:
        article_id = _article_id(conn, slug)
        row = repo.comment(conn, comment_id) if comment_id <= MAX_ID else None
        if row is None or row.article_id != article_id:
            raise NotFound(messages.COMMENT_NOT_FOUND)
        if row.author_id != viewer:
            raise Forbidden()
        repo.delete_comment(conn, comment_id)
    get_cache().bump([comments_gen(slug)])
