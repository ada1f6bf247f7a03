"""Listing articles and the feed: order, counts, filters, paging, and a constant statement count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Api, auth, count_statements
from tests.integration.helpers import error_messages

SUMMARY_FIELDS = {
    "slug",
    "title",
    "description",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
}


def listing(client: FlaskClient, url: str = "/api/articles", token: str | None = None, **params: Any) -> Any:
    resp = client.get(url, query_string=params, headers=auth(token) if token else {})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.json


def titles(body: Any) -> list[str]:
    return [a["title"] for a in body["articles"]]


@dataclass
class World:
    """28 articles: alice wrote a0..a19, bob b0..b3, carol c0..c3 (in that order).

    Every article is tagged "common"; alice's even ones also "even". dave favorited
    every article and follows alice and bob; erin favorited bob's and carol's.
    """

    alice: str
    bob: str
    carol: str
    dave: str
    erin: str


@pytest.fixture
def world(api: Api) -> World:
    w = World(*(api.register(name) for name in ("alice", "bob", "carol", "dave", "erin")))
    slugs: dict[str, str] = {}
    for i in range(20):
        tags = ["common", "even"] if i % 2 == 0 else ["common"]
        slugs[f"a{i}"] = api.create_article(w.alice, f"a{i}", tags=tags)["slug"]
    for i in range(4):
        slugs[f"b{i}"] = api.create_article(w.bob, f"b{i}", tags=["common", "bobs"])["slug"]
        slugs[f"c{i}"] = api.create_article(w.carol, f"c{i}", tags=["common"])["slug"]
    for title, slug in slugs.items():
        assert api.client.post(f"/api/articles/{slug}/favorite", headers=auth(w.dave)).status_code == 200
        if title[0] in "bc":
            assert api.client.post(f"/api/articles/{slug}/favorite", headers=auth(w.erin)).status_code == 200
    for name in ("alice", "bob"):
        assert api.client.post(f"/api/profiles/{name}/follow", headers=auth(w.dave)).status_code == 200
    return w


# --- order, count, shape -------------------------------------------------------


def test_list_is_newest_first(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    for title in ("first", "second", "third"):
        api.create_article(token, title)
    body = listing(client)
    assert titles(body) == ["third", "second", "first"]
    assert body["articlesCount"] == 3


def test_empty_database_lists_nothing(client: FlaskClient) -> None:
    assert listing(client) == {"articles": [], "articlesCount": 0}


def test_list_items_omit_the_body(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    api.create_article(token, "t", tags=["x"], body="a long body")
    bob = api.register("bob")
    client.post("/api/profiles/alice/follow", headers=auth(bob))
    feed = listing(client, "/api/articles/feed", bob)
    for body in (listing(client), listing(client, token=token), feed):
        assert set(body["articles"][0]) == SUMMARY_FIELDS


def test_articles_count_is_the_total_not_the_page_length(client: FlaskClient, world: World) -> None:
    body = listing(client, limit=2)
    assert titles(body) == ["c3", "b3"]
    assert body["articlesCount"] == 28


def test_default_limit_is_20_and_offset_pages_on(client: FlaskClient, world: World) -> None:
    first = listing(client)
    assert len(first["articles"]) == 20
    rest = listing(client, offset=20)
    assert len(rest["articles"]) == 8
    assert rest["articlesCount"] == 28
    assert set(titles(first)).isdisjoint(titles(rest))
    assert titles(listing(client, limit=100)) == titles(first) + titles(rest)


def test_offset_beyond_the_end_gives_an_empty_page_with_the_count(client: FlaskClient, world: World) -> None:
    assert listing(client, offset=500) == {"articles": [], "articlesCount": 28}
    assert listing(client, tag="bobs", offset=4) == {"articles": [], "articlesCount": 4}


@pytest.mark.parametrize(
    "params", [{"limit": 101}, {"limit": 0}, {"limit": -1}, {"offset": -1}, {"limit": "abc"}, {"offset": "1.5"}]
)
@pytest.mark.parametrize("url", ["/api/articles", "/api/articles/feed"])
def test_bad_paging_parameters_are_422(client: FlaskClient, api: Api, url: str, params: dict[str, Any]) -> None:
    token = api.register("alice")
    error_messages(client.get(url, query_string=params, headers=auth(token)), 422)


def test_list_shows_favorited_and_following_for_the_viewer(client: FlaskClient, world: World) -> None:
    by_title = {a["title"]: a for a in listing(client, token=world.erin, limit=100)["articles"]}
    assert by_title["b0"]["favorited"] is True
    assert by_title["a0"]["favorited"] is False
    assert by_title["b0"]["favoritesCount"] == 2
    assert by_title["a0"]["favoritesCount"] == 1
    dave_view = {a["title"]: a for a in listing(client, token=world.dave, limit=100)["articles"]}
    assert dave_view["a0"]["author"]["following"] is True
    assert dave_view["c0"]["author"]["following"] is False
    assert all(not a["favorited"] and not a["author"]["following"] for a in listing(client, limit=100)["articles"])


# --- filters -----------------------------------------------------------------


def test_filter_by_tag(client: FlaskClient, world: World) -> None:
    body = listing(client, tag="even")
    assert titles(body) == [f"a{i}" for i in range(18, -1, -2)]
    assert body["articlesCount"] == 10
    assert all("even" in a["tagList"] for a in body["articles"])
    assert listing(client, tag="nope") == {"articles": [], "articlesCount": 0}


def test_filter_by_author(client: FlaskClient, world: World) -> None:
    body = listing(client, author="bob")
    assert titles(body) == ["b3", "b2", "b1", "b0"]
    assert body["articlesCount"] == 4
    assert listing(client, author="nobody")["articlesCount"] == 0


def test_filter_by_favorited(client: FlaskClient, world: World) -> None:
    body = listing(client, favorited="erin")
    assert titles(body) == ["c3", "b3", "c2", "b2", "c1", "b1", "c0", "b0"]
    assert body["articlesCount"] == 8
    assert listing(client, favorited="dave")["articlesCount"] == 28
    assert listing(client, favorited="alice")["articlesCount"] == 0


def test_filters_combine(client: FlaskClient, world: World) -> None:
    assert titles(listing(client, tag="common", author="carol")) == ["c3", "c2", "c1", "c0"]
    assert titles(listing(client, author="bob", favorited="erin")) == ["b3", "b2", "b1", "b0"]
    assert titles(listing(client, tag="even", favorited="erin")) == []
    body = listing(client, tag="even", author="alice", favorited="dave", limit=3)
    assert titles(body) == ["a18", "a16", "a14"]
    assert body["articlesCount"] == 10
    assert listing(client, tag="even", author="bob")["articlesCount"] == 0


# --- feed ----------------------------------------------------------------------


def test_feed_lists_followed_authors_newest_first(client: FlaskClient, world: World) -> None:
    body = listing(client, "/api/articles/feed", world.dave, limit=6)
    assert titles(body) == ["b3", "b2", "b1", "b0", "a19", "a18"]
    assert body["articlesCount"] == 24
    assert all(a["author"]["following"] is True for a in body["articles"])
    assert all(set(a) == SUMMARY_FIELDS for a in body["articles"])


def test_feed_pages_with_offset(client: FlaskClient, world: World) -> None:
    body = listing(client, "/api/articles/feed", world.dave, offset=22)
    assert titles(body) == ["a1", "a0"]
    assert body["articlesCount"] == 24


def test_feed_is_empty_without_follows_and_after_unfollowing(client: FlaskClient, world: World) -> None:
    assert listing(client, "/api/articles/feed", world.erin) == {"articles": [], "articlesCount": 0}
    client.delete("/api/profiles/alice/follow", headers=auth(world.dave))
    client.delete("/api/profiles/bob/follow", headers=auth(world.dave))
    assert listing(client, "/api/articles/feed", world.dave)["articlesCount"] == 0


def test_feed_without_a_token_is_401(client: FlaskClient) -> None:
    error_messages(client.get("/api/articles/feed"), 401)
    error_messages(client.get("/api/articles/feed", headers=auth("garbage")), 401)


# --- statement counts --------------------------------------------------------

LIST_CASES = [
    {},
    {"tag": "common"},
    {"author": "alice"},
    {"favorited": "dave"},
    {"tag": "common", "author": "alice", "favorited": "dave"},
]


def statements_for(app: Flask, client: FlaskClient, url: str, token: str | None, **params: Any) -> tuple[int, int]:
    """(statements run, articles returned) for one request."""
    with count_statements(app) as statements:
        body = listing(client, url, token, **params)
    return len(statements), len(body["articles"])


@pytest.mark.parametrize("params", LIST_CASES, ids=lambda p: "-".join(p) or "all")
@pytest.mark.parametrize("viewer", ["anonymous", "dave", "erin"])
def test_list_statement_count_does_not_grow_with_page_size(
    app: Flask, client: FlaskClient, world: World, viewer: str, params: dict[str, str]
) -> None:
    token = None if viewer == "anonymous" else getattr(world, viewer)
    one, one_rows = statements_for(app, client, "/api/articles", token, limit=1, **params)
    twenty, twenty_rows = statements_for(app, client, "/api/articles", token, limit=20, **params)
    assert (one_rows, twenty_rows) == (1, 20)
    assert one == twenty
    assert 2 <= twenty <= 5


@pytest.mark.parametrize("viewer", ["dave", "erin"])
def test_feed_statement_count_does_not_grow_with_page_size(
    app: Flask, client: FlaskClient, world: World, viewer: str
) -> None:
    client.post("/api/profiles/carol/follow", headers=auth(world.erin))
    client.post("/api/profiles/alice/follow", headers=auth(world.erin))
    token = getattr(world, viewer)
    one, one_rows = statements_for(app, client, "/api/articles/feed", token, limit=1)
    twenty, twenty_rows = statements_for(app, client, "/api/articles/feed", token, limit=20)
    assert (one_rows, twenty_rows) == (1, 20)
    assert one == twenty
    assert 2 <= twenty <= 5
