"""Per-viewer facts merged into shared, viewer-independent responses.

Cached bodies are what an anonymous reader sees (`favorited` and `following`
false). For a signed-in reader one batched statement finds which of the
body's articles they favorited and which of its authors they follow, by slug
and username, and the flags are set in place.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, String, bindparam, text

from service.db import get_db

SELECT_VIEWER_FLAGS = text(
    """
    SELECT 'favorited' AS kind, a.slug AS name
    FROM favorites f JOIN articles a ON a.id = f.article_id
    WHERE f.user_id = :viewer AND a.slug IN :slugs
    UNION ALL
    SELECT 'following', u.username
    FROM follows fo JOIN users u ON u.id = fo.followee_id
    WHERE fo.follower_id = :viewer AND u.username IN :usernames
    """
).bindparams(bindparam("slugs", expanding=True, type_=String), bindparam("usernames", expanding=True, type_=String))


def viewer_flags(conn: Connection, viewer: int, slugs: list[str], usernames: list[str]) -> tuple[set[str], set[str]]:
    """(favorited slugs, followed usernames) among those given, in one statement."""
    favorited: set[str] = set()
    following: set[str] = set()
    if not slugs and not usernames:
        return favorited, following
    # An empty IN list is valid SQL through SQLAlchemy's expanding parameters.
    params = {"viewer": viewer, "slugs": slugs, "usernames": usernames}
    for kind, name in conn.execute(SELECT_VIEWER_FLAGS, params):
        (favorited if kind == "favorited" else following).add(name)
    return favorited, following


def _parts(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The article objects and the profile objects inside a response document."""
    articles = doc.get("articles") or ([doc["article"]] if "article" in doc else [])
    comments = doc.get("comments") or ([doc["comment"]] if "comment" in doc else [])
    profiles = [a["author"] for a in articles] + [c["author"] for c in comments]
    if "profile" in doc:
        profiles.append(doc["profile"])
    return articles, profiles


def personalize(body: bytes, viewer: int | None, conn: Connection | None = None) -> bytes:
    """`body` as `viewer` sees it; unchanged for anonymous readers. Uses `conn` when given."""
    if viewer is None:
        return body
    doc = orjson.loads(body)
    articles, profiles = _parts(doc)
    if not articles and not profiles:
        return body
    slugs, usernames = [a["slug"] for a in articles], sorted({p["username"] for p in profiles})
    if conn is None:
        with get_db().read() as own:
            favorited, following = viewer_flags(own, viewer, slugs, usernames)
    else:
        favorited, following = viewer_flags(conn, viewer, slugs, usernames)
    for article in articles:
        article["favorited"] = article["slug"] in favorited
    for profile in profiles:
        profile["following"] = profile["username"] in following
    return orjson.dumps(doc)
