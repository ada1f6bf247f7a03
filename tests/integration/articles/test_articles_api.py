"""Creating, reading, changing, deleting and favoriting articles, through the HTTP API."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.api.errors import messages
from tests.conftest import Api, auth
from tests.integration.helpers import error_messages

ARTICLE_FIELDS = {
    "slug",
    "title",
    "description",
    "body",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def get(client: FlaskClient, slug: str, token: str | None = None) -> Any:
    return client.get(f"/api/articles/{slug}", headers=auth(token) if token else {})


def put(client: FlaskClient, path_slug: str, token: str | None, **fields: Any) -> Any:
    return client.put(f"/api/articles/{path_slug}", json={"article": fields}, headers=auth(token) if token else {})


# --- create and read ---------------------------------------------------------


def test_create_returns_201_with_the_full_article(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    article = {"title": "How to Train Your Dragon", "description": "Ever wonder how?", "body": "Very carefully."}
    resp = client.post("/api/articles", json={"article": {**article, "tagList": ["dragons"]}}, headers=auth(token))
    assert resp.status_code == 201
    created = resp.json["article"]
    assert set(created) == ARTICLE_FIELDS
    assert created["slug"] == "how-to-train-your-dragon"
    assert {k: created[k] for k in article} == article
    assert created["tagList"] == ["dragons"]
    assert created["favorited"] is False
    assert created["favoritesCount"] == 0
    assert ISO.match(created["createdAt"])
    assert created["updatedAt"] == created["createdAt"]
    assert created["author"] == {"username": "alice", "bio": None, "image": None, "following": False}
    assert get(client, created["slug"]).json["article"] == created


def test_tag_list_is_sorted_and_deduplicated(api: Api) -> None:
    token = api.register("alice")
    article = api.create_article(token, tags=["zeta", "alpha", "zeta", "mid", " alpha "])
    assert article["tagList"] == ["alpha", "mid", "zeta"]


def test_tag_list_may_be_omitted(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    resp = client.post(
        "/api/articles", json={"article": {"title": "T", "description": "d", "body": "b"}}, headers=auth(token)
    )
    assert resp.status_code == 201
    assert resp.json["article"]["tagList"] == []


def test_same_title_twice_gives_distinct_readable_slugs(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    first = api.create_article(alice, "Same Title")
    second = api.create_article(bob, "Same Title")
    assert first["slug"] == "same-title"
    assert second["slug"] != first["slug"]
    assert second["slug"].startswith("same-title-")
    assert get(client, first["slug"]).json["article"]["author"]["username"] == "alice"
    assert get(client, second["slug"]).json["article"]["author"]["username"] == "bob"


def test_a_title_feed_still_creates_a_readable_article(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    article = api.create_article(token, "Feed")
    assert article["slug"] != "feed"
    resp = get(client, article["slug"])
    assert resp.status_code == 200
    assert resp.json["article"]["title"] == "Feed"
    # /api/articles/feed is still the feed.
    assert "articles" in client.get("/api/articles/feed", headers=auth(token)).json


def test_a_title_without_ascii_letters_still_gets_a_slug(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    article = api.create_article(token, "日本語 !!!")
    assert re.fullmatch(r"[a-z0-9-]+", article["slug"])
    assert get(client, article["slug"]).status_code == 200


def test_create_refuses_fields_the_user_does_not_own_and_stores_nothing(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    api.register("mallory")
    forged = {
        "title": "Mine",
        "description": "d",
        "body": "b",
        "tagList": [],
        "author": {"username": "mallory"},
        "favoritesCount": 99,
        "favorited": True,
        "slug": "chosen-slug",
        "createdAt": "2000-01-01T00:00:00.000Z",
        "id": 12345,
    }
    resp = client.post("/api/articles", json={"article": forged}, headers=auth(token))
    refused = error_messages(resp, 422)
    for field in ("author", "favoritesCount", "favorited", "slug", "createdAt", "id"):
        assert any(message.startswith(f"{field} is not accepted") for message in refused), (field, refused)
    error_messages(get(client, "chosen-slug"), 404)
    error_messages(get(client, "mine"), 404)
    assert client.get("/api/articles").json["articlesCount"] == 0  # type: ignore[index]


@pytest.mark.parametrize(
    "article",
    [
        {"description": "d", "body": "b"},
        {"title": "", "description": "d", "body": "b"},
        {"title": "t" * 257, "description": "d", "body": "b"},
        {"title": "t", "description": "d", "body": "b\x00"},
        {"title": "t", "description": "d", "body": "b", "tagList": ["a,b"]},
        {"title": "t", "description": "d", "body": "b", "tagList": ["   "]},
        {"title": "t", "description": "d", "body": "b", "tagList": ["a\x00"]},
        {"title": "t", "description": "d", "body": "b", "tagList": ["x\x00y"]},
        {"title": "t", "description": "d", "body": "b", "tagList": [","]},
        {"title": "t", "description": "d", "body": "b", "tagList": [f"t{i}" for i in range(11)]},
        {"title": "t", "description": "d", "body": "b", "tagList": "notalist"},
        {"title": 5, "description": "d", "body": "b"},
    ],
)
def test_create_rejects_invalid_articles_with_422(client: FlaskClient, api: Api, article: dict[str, Any]) -> None:
    token = api.register("alice")
    error_messages(client.post("/api/articles", json={"article": article}, headers=auth(token)), 422)
    assert client.get("/api/articles").json["articlesCount"] == 0


def test_create_without_a_token_is_401(client: FlaskClient) -> None:
    resp = client.post("/api/articles", json={"article": {"title": "t", "description": "d", "body": "b"}})
    error_messages(resp, 401)
    assert client.get("/api/articles").json["articlesCount"] == 0


def test_get_unknown_slug_is_404(client: FlaskClient) -> None:
    assert error_messages(get(client, "no-such-article"), 404) == [messages.ARTICLE_NOT_FOUND]


# --- update -------------------------------------------------------------------


def test_author_updates_fields_and_the_slug_stays(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    article = api.create_article(token, "Old title", tags=["t"])
    resp = put(client, article["slug"], token, title="New title", body="new body")
    assert resp.status_code == 200
    updated = resp.json["article"]
    assert updated["slug"] == article["slug"]
    assert (updated["title"], updated["body"], updated["description"]) == ("New title", "new body", "d")
    assert updated["tagList"] == ["t"]
    assert updated["createdAt"] == article["createdAt"]
    assert updated["updatedAt"] >= article["updatedAt"]
    assert get(client, article["slug"]).json["article"]["title"] == "New title"


def test_update_refuses_fields_the_user_does_not_own_and_changes_nothing(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    api.register("mallory")
    article = api.create_article(token, "Title")
    resp = put(
        client,
        article["slug"],
        token,
        description="nd",
        slug="other",
        favoritesCount=7,
        author={"username": "mallory"},
        createdAt="2000-01-01T00:00:00.000Z",
        id=1,
    )
    refused = error_messages(resp, 422)
    for field in ("slug", "favoritesCount", "author", "createdAt", "id"):
        assert any(message.startswith(f"{field} is not accepted") for message in refused), (field, refused)
    assert get(client, article["slug"]).json["article"] == article
    error_messages(get(client, "other"), 404)


def test_update_by_another_user_is_403_and_changes_nothing(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    article = api.create_article(alice, "Alice's")
    assert error_messages(put(client, article["slug"], bob, title="Hijacked"), 403) == [messages.FORBIDDEN]
    assert get(client, article["slug"]).json["article"] == article


def test_update_without_a_token_is_401(client: FlaskClient, api: Api) -> None:
    article = api.create_article(api.register("alice"), "Title")
    error_messages(put(client, article["slug"], None, title="x"), 401)
    assert get(client, article["slug"]).json["article"]["title"] == "Title"


def test_update_unknown_slug_is_404(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    error_messages(put(client, "nope", token, title="x"), 404)


def test_update_with_an_invalid_field_is_422(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    article = api.create_article(token, "Title")
    error_messages(put(client, article["slug"], token, title=""), 422)
    error_messages(put(client, article["slug"], token, title=None), 422)
    assert get(client, article["slug"]).json["article"]["title"] == "Title"


# --- delete -------------------------------------------------------------------


def test_author_deletes_with_204_and_the_article_is_gone(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    article = api.create_article(token, "Doomed", tags=["gone"])
    client.post(f"/api/articles/{article['slug']}/comments", json={"comment": {"body": "c"}}, headers=auth(token))
    client.post(f"/api/articles/{article['slug']}/favorite", headers=auth(token))
    resp = client.delete(f"/api/articles/{article['slug']}", headers=auth(token))
    assert resp.status_code == 204
    assert resp.get_data() == b""
    error_messages(get(client, article["slug"]), 404)
    assert client.get("/api/articles").json["articlesCount"] == 0
    assert client.get("/api/tags").json["tags"] == []
    error_messages(client.delete(f"/api/articles/{article['slug']}", headers=auth(token)), 404)


def test_delete_by_another_user_is_403_and_the_article_stays(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    article = api.create_article(alice, "Alice's")
    error_messages(client.delete(f"/api/articles/{article['slug']}", headers=auth(bob)), 403)
    assert get(client, article["slug"]).status_code == 200


def test_delete_without_a_token_is_401(client: FlaskClient, api: Api) -> None:
    article = api.create_article(api.register("alice"), "Title")
    error_messages(client.delete(f"/api/articles/{article['slug']}"), 401)
    assert get(client, article["slug"]).status_code == 200


# --- favorites ----------------------------------------------------------------


def favorite(client: FlaskClient, slug: str, token: str, on: bool = True) -> Any:
    method = client.post if on else client.delete
    return method(f"/api/articles/{slug}/favorite", headers=auth(token))


def test_favorite_is_idempotent_and_counts_distinct_users(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    carol = api.register("carol")
    slug = api.create_article(alice, "Popular")["slug"]
    for _ in range(3):
        resp = favorite(client, slug, bob)
        assert resp.status_code == 200
        assert resp.json["article"]["favorited"] is True
        assert resp.json["article"]["favoritesCount"] == 1
    resp = favorite(client, slug, carol)
    assert resp.json["article"]["favoritesCount"] == 2
    assert get(client, slug, bob).json["article"]["favorited"] is True
    assert get(client, slug, alice).json["article"]["favorited"] is False
    anonymous = get(client, slug).json["article"]
    assert (anonymous["favorited"], anonymous["favoritesCount"]) == (False, 2)


def test_unfavorite_is_idempotent_and_never_goes_below_zero(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    slug = api.create_article(alice, "Popular")["slug"]
    favorite(client, slug, alice)
    favorite(client, slug, bob)
    for _ in range(2):
        resp = favorite(client, slug, bob, on=False)
        assert resp.status_code == 200
        assert resp.json["article"]["favorited"] is False
        assert resp.json["article"]["favoritesCount"] == 1
    favorite(client, slug, alice, on=False)
    resp = favorite(client, slug, alice, on=False)
    assert resp.json["article"]["favoritesCount"] == 0


def test_favorite_unknown_article_is_404_and_without_token_401(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    error_messages(favorite(client, "nope", token), 404)
    error_messages(favorite(client, "nope", token, on=False), 404)
    slug = api.create_article(token, "Title")["slug"]
    error_messages(client.post(f"/api/articles/{slug}/favorite"), 401)
    error_messages(client.delete(f"/api/articles/{slug}/favorite"), 401)
    assert get(client, slug).json["article"]["favoritesCount"] == 0


def test_article_shows_following_of_its_author_for_the_viewer(client: FlaskClient, api: Api) -> None:
    alice = api.register("alice")
    bob = api.register("bob")
    slug = api.create_article(alice, "Title")["slug"]
    client.post("/api/profiles/alice/follow", headers=auth(bob))
    assert get(client, slug, bob).json["article"]["author"]["following"] is True
    assert get(client, slug).json["article"]["author"]["following"] is False
