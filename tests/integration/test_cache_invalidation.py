"""Every cached place shows a write on the next read: the feed after a follow or an
unfollow, lists, articles, comments, feeds and profiles after an author renames
themselves or changes their bio or image, and every page that can hold a new article
after it is published (while the pages that cannot stay cached).

Each test fills the cache first (the same reads twice, the second a hit), then
writes, then reads again. They run on every stack of the `app` fixture: the in-process
cache (SQLite, PostgreSQL) and Redis (PostgreSQL).
"""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask

from tests.conftest import Api, auth, count_statements


def _hits(app: Flask) -> int:
    return int(app.extensions["shared_cache"].stats["hits"])


def _get(api: Api, path: str, token: str | None = None) -> Any:
    reply = api.client.get(path, headers=auth(token) if token else {})
    assert reply.status_code == 200, (path, reply.get_data(as_text=True))
    return reply.json


def _feed_authors(api: Api, token: str) -> list[str]:
    return [a["author"]["username"] for a in _get(api, "/api/articles/feed", token)["articles"]]


def test_the_cached_feed_shows_an_author_after_a_follow_and_stops_after_an_unfollow(app: Flask, api: Api) -> None:
    reader = api.register("reader")
    writer = api.register("writer")
    api.create_article(writer, "First")
    api.create_article(writer, "Second")

    assert _feed_authors(api, reader) == []
    hits = _hits(app)
    assert _feed_authors(api, reader) == []
    assert _hits(app) > hits  # the empty feed is cached

    assert api.client.post("/api/profiles/writer/follow", headers=auth(reader)).status_code == 200
    assert _feed_authors(api, reader) == ["writer", "writer"]
    assert _feed_authors(api, reader) == ["writer", "writer"]  # and cached again

    assert api.client.delete("/api/profiles/writer/follow", headers=auth(reader)).status_code == 200
    assert _feed_authors(api, reader) == []
    feed = _get(api, "/api/articles/feed", reader)
    assert feed == {"articles": [], "articlesCount": 0}


def test_a_follow_changes_only_the_followers_cached_feed(app: Flask, api: Api) -> None:
    reader = api.register("reader")
    bystander = api.register("bystander")
    writer = api.register("writer")
    other = api.register("other")
    api.create_article(writer, "By writer")
    api.create_article(other, "By other")
    api.client.post("/api/profiles/other/follow", headers=auth(bystander))
    assert _feed_authors(api, bystander) == ["other"]
    assert _feed_authors(api, reader) == []

    api.client.post("/api/profiles/writer/follow", headers=auth(reader))
    assert _feed_authors(api, reader) == ["writer"]
    assert _feed_authors(api, bystander) == ["other"]


CHANGES = {
    "username": {"username": "renamed"},
    "bio": {"bio": "A new bio"},
    "image": {"image": "https://example.com/new.png"},
}


@pytest.mark.parametrize("field", list(CHANGES))
def test_every_cached_place_that_shows_an_author_shows_their_profile_change(app: Flask, api: Api, field: str) -> None:
    author = api.register("author")
    follower = api.register("follower")
    api.client.put(
        "/api/user", json={"user": {"bio": "Old bio", "image": "https://example.com/old.png"}}, headers=auth(author)
    )
    slug = api.create_article(author, "Signed", tags=["t"])["slug"]
    reply = api.client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "Me"}}, headers=auth(author))
    assert reply.status_code == 200
    api.client.post("/api/profiles/author/follow", headers=auth(follower))

    def authors(name: str) -> dict[str, dict[str, Any]]:
        """The author as every cached read shows them, anonymous and as the follower."""
        shown = {
            "list": _get(api, "/api/articles")["articles"][0]["author"],
            "list by author": _get(api, f"/api/articles?author={name}")["articles"][0]["author"],
            "list by tag": _get(api, "/api/articles?tag=t")["articles"][0]["author"],
            "article": _get(api, f"/api/articles/{slug}")["article"]["author"],
            "comments": _get(api, f"/api/articles/{slug}/comments")["comments"][0]["author"],
            "profile": _get(api, f"/api/profiles/{name}")["profile"],
            "feed": _get(api, "/api/articles/feed", follower)["articles"][0]["author"],
            "article as follower": _get(api, f"/api/articles/{slug}", follower)["article"]["author"],
        }
        return {place: {k: v for k, v in who.items() if k != "following"} for place, who in shown.items()}

    before = {"username": "author", "bio": "Old bio", "image": "https://example.com/old.png"}
    shown = authors("author")  # fills the cache
    assert shown == dict.fromkeys(shown, before)
    hits = _hits(app)
    assert authors("author") == shown
    assert _hits(app) >= hits + len(shown)  # every place came from the cache

    reply = api.client.put("/api/user", json={"user": CHANGES[field]}, headers=auth(author))
    assert reply.status_code == 200, reply.get_data(as_text=True)

    after = {**before, **CHANGES[field]}
    shown = authors(after["username"])
    assert shown == dict.fromkeys(shown, after)
    if field == "username":
        assert api.client.get("/api/profiles/author").status_code == 404
        assert _get(api, "/api/articles?author=author") == {"articles": [], "articlesCount": 0}


def test_a_new_article_shows_on_every_page_that_can_hold_it_and_drops_no_other(app: Flask, api: Api) -> None:
    """Pages of its tags, its author, no filter, and every feed show it at once; a page of another
    tag, another author or someone's favorites (a new article has none) stays cached."""
    alice, bob, carol = api.register("alice"), api.register("bob"), api.register("carol")
    api.create_article(alice, "Old by alice", tags=["go"])
    bobs = api.create_article(bob, "Old by bob", tags=["rust"])["slug"]
    assert api.client.post(f"/api/articles/{bobs}/favorite", headers=auth(carol)).status_code == 200
    assert api.client.post("/api/profiles/alice/follow", headers=auth(carol)).status_code == 200
    shown = {
        "/api/articles": 2,
        "/api/articles?limit=1": 2,
        "/api/articles?tag=go": 1,
        "/api/articles?tag=fresh": 0,
        "/api/articles?author=alice": 1,
        "/api/articles?tag=go&author=alice": 1,
    }
    kept = [
        "/api/articles?tag=rust",
        "/api/articles?author=bob",
        "/api/articles?favorited=carol",
        "/api/articles?favorited=carol&tag=go",
        "/api/articles?tag=rust&author=bob",
    ]
    for _ in range(2):  # the second round is all hits
        for path in [*shown, *kept]:
            _get(api, path)
        _get(api, "/api/articles/feed", carol)
    before = {path: _get(api, path) for path in kept}

    slug = api.create_article(alice, "New by alice", tags=["go", "fresh"])["slug"]

    for path, count in shown.items():
        page = _get(api, path)
        assert (page["articles"][0]["slug"], page["articlesCount"]) == (slug, count + 1), path
    feed = _get(api, "/api/articles/feed", carol)
    assert (feed["articles"][0]["slug"], feed["articlesCount"]) == (slug, 2)
    with count_statements(app) as statements:
        after = {path: _get(api, path) for path in kept}
    assert after == before
    assert statements == []
