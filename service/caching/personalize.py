"""Per-viewer facts merged into shared, viewer-independent responses.

A shared cache entry is `<ids>\\n<body>`: the body is what an anonymous reader
gets (`favorited` and `following` false) and the ids line maps its slugs and
usernames to row ids. For a signed-in reader one batched statement, on
primary keys only, finds which of those articles they favorited and which of
those authors they follow, and the flags are set in place.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, bindparam, text

from service.api.endpoint import encode
from service.storage.db import get_db

SELECT_VIEWER_FLAGS = text(
    """
    SELECT 'favorited' AS kind, article_id AS id FROM favorites
    WHERE user_id = :viewer AND article_id IN :article_ids
    UNION ALL
    SELECT 'following', followee_id FROM follows
    WHERE follower_id = :viewer AND followee_id IN :user_ids
    """
).bindparams(
    bindparam("article_ids", expanding=True, type_=BigInteger),
    bindparam("user_ids", expanding=True, type_=BigInteger),
)


def shared(payload: Any, articles: Iterable[tuple[str, int]] = (), users: Iterable[tuple[str, int]] = ()) -> bytes:
    """A cache entry for `payload`: its (slug, id) and (username, id) pairs, a newline, the JSON body."""
    return orjson.dumps({"a": dict(articles), "u": dict(users)}) + b"\n" + encode(payload)


def viewer_flags(
    conn: Connection, viewer: int, article_ids: list[int], user_ids: list[int]
) -> tuple[set[int], set[int]]:
    """(favorited article ids, followed user ids) among those given, in one statement."""
    favorited: set[int] = set()
    following: set[int] = set()
    params = {"viewer": viewer, "article_ids": article_ids, "user_ids": user_ids}
    for kind, row_id in conn.execute(SELECT_VIEWER_FLAGS, params):
        (favorited if kind == "favorited" else following).add(row_id)
    return favorited, following


def _parts(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The article objects and the profile objects inside a response document."""
    articles = doc.get("articles") or ([doc["article"]] if "article" in doc else [])
    comments = doc.get("comments") or ([doc["comment"]] if "comment" in doc else [])
    profiles = [a["author"] for a in articles] + [c["author"] for c in comments]
    if "profile" in doc:
        profiles.append(doc["profile"])
    return articles, profiles


def personalize(entry: bytes, viewer: int | None, conn: Connection | None = None) -> bytes:
    """The body of a `shared()` entry as `viewer` sees it. Uses `conn` when given."""
    header, _, body = entry.partition(b"\n")
    ids = orjson.loads(header)
    if viewer is None or not (ids["a"] or ids["u"]):
        return body
    slug_ids: dict[str, int] = ids["a"]
    user_ids: dict[str, int] = ids["u"]
    if conn is None:
        with get_db().read() as own:
            favorited, following = viewer_flags(own, viewer, list(slug_ids.values()), list(user_ids.values()))
    else:
        favorited, following = viewer_flags(conn, viewer, list(slug_ids.values()), list(user_ids.values()))
    doc = orjson.loads(body)
    articles, profiles = _parts(doc)
    for article in articles:
        article["favorited"] = slug_ids.get(article["slug"]) in favorited
    for profile in profiles:
        profile["following"] = user_ids.get(profile["username"]) in following
    return orjson.dumps(doc)
