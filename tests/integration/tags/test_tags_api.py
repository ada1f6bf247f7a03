"""The tag cloud, through the HTTP API."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.conftest import Api, auth


def test_tags_is_empty_without_articles(client: FlaskClient) -> None:
    resp = client.get("/api/tags")
    assert resp.status_code == 200
    assert resp.json == {"tags": []}


def test_tags_are_listed_most_used_first_ties_by_name(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    api.create_article(token, "1", tags=["rare", "common", "middle"])
    api.create_article(token, "2", tags=["common", "middle", "b-tie"])
    api.create_article(token, "3", tags=["common", "a-tie"])
    assert client.get("/api/tags").json == {"tags": ["common", "middle", "a-tie", "b-tie", "rare"]}


def test_tags_follow_deletions(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    keep = api.create_article(token, "keep", tags=["one"])
    gone = api.create_article(token, "gone", tags=["two", "one"])
    api.create_article(token, "also", tags=["two"])
    assert client.get("/api/tags").json["tags"] == ["one", "two"]
    client.delete(f"/api/articles/{gone['slug']}", headers=auth(token))
    client.delete(f"/api/articles/{keep['slug']}", headers=auth(token))
    assert client.get("/api/tags").json["tags"] == ["two"]


def test_tags_are_listed_once_however_often_used(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    for i in range(5):
        api.create_article(token, f"t{i}", tags=["same"])
    assert client.get("/api/tags").json["tags"] == ["same"]
