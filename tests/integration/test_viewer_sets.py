"""Signed-in reads from the cache: the viewer's favorites and follows kept as sets beside the shared
entries (service.caching.personalize), read in the same round trip, answered ahead of Flask, and
never older than the viewer's last acknowledged write."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import Client

from service.caching import personalize
from tests.conftest import Api, auth, count_statements
from tests.integration.helpers import header_list, served_fast

REQUEST_ID = "viewer-1"


def _seed(api: Api) -> dict[str, str]:
    alice, carol = api.register("alice"), api.register("carol")
    first = api.create_article(alice, title="First", tags=["go"])["slug"]
    api.create_article(alice, title="Second", tags=["go"])
    api.create_article(carol, title="Third")
    resp = api.client.post(f"/api/articles/{first}/comments", json={"comment": {"body": "hi"}}, headers=auth(carol))
    assert resp.status_code == 200
    assert api.client.post(f"/api/articles/{first}/favorite", headers=auth(carol)).status_code == 200
    assert api.client.post("/api/profiles/alice/follow", headers=auth(carol)).status_code == 200
    return {"alice": alice, "carol": carol, "slug": first}


def _paths(slug: str) -> list[str]:
    return [
        "/api/articles",
        "/api/articles?tag=go&limit=1",
        "/api/articles?favorited=carol",
        f"/api/articles/{slug}",
        "/api/profiles/alice",
        f"/api/articles/{slug}/comments",
        "/api/articles/feed",
        "/api/articles/feed?limit=1",
    ]


def _flags(body: Any) -> list[tuple[Any, ...]]:
    """Every (favorited, following) pair of a response body, in order."""
    found: list[tuple[Any, ...]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "following" in node or "favorited" in node:
                found.append((node.get("slug") or node.get("username"), node.get("favorited"), node.get("following")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(body)
    return found


def test_a_signed_in_hit_is_answered_ahead_of_flask_as_flask_answers_it(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    seeded = _seed(api)
    inner = Client(app.wsgi_app.app)  # type: ignore[attr-defined]  # Flask alone, on the same cache
    for who in ("carol", "alice"):
        headers = {"X-Request-Id": REQUEST_ID, **auth(seeded[who])}
        for path in _paths(seeded["slug"]):
            client.get(path, headers=headers)  # a miss: Flask fills the entry
            client.get(path, headers=headers)  # a hit: Flask builds the viewer's sets
            before = served_fast(app)
            fast = client.get(path, headers=headers)
            assert served_fast(app) == before + 1, (who, path)
            slow = inner.get(path, headers=headers)
            assert served_fast(app) == before + 1, (who, path)
            assert (fast.status_code, fast.get_data()) == (200, slow.get_data()), (who, path)
            assert header_list(fast) == header_list(slow), (who, path)
            etag = fast.headers["ETag"]
            again = client.get(path, headers={**headers, "If-None-Match": etag})
            assert again.status_code == 304 and served_fast(app) == before + 2, (who, path)
    mine = client.get(f"/api/articles/{seeded['slug']}", headers=auth(seeded["carol"])).json
    assert (mine["article"]["favorited"], mine["article"]["author"]["following"]) == (True, True)  # type: ignore[index]
    theirs = client.get(f"/api/articles/{seeded['slug']}", headers=auth(seeded["alice"])).json
    assert (theirs["article"]["favorited"], theirs["article"]["author"]["following"]) == (False, False)  # type: ignore[index]


def test_a_signed_in_hit_runs_no_sql_once_the_viewers_sets_are_built(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    headers = auth(seeded["carol"])
    for path in _paths(seeded["slug"]):
        client.get(path, headers=headers)
        client.get(path, headers=headers)
        with count_statements(app) as statements:
            assert client.get(path, headers=headers).status_code == 200
        assert statements == [], path


def test_the_viewers_flags_follow_their_writes_at_once(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    carol, slug = auth(seeded["carol"]), seeded["slug"]
    warm = ["/api/articles", f"/api/articles/{slug}", "/api/profiles/alice", f"/api/articles/{slug}/comments"]
    for _ in range(2):
        for path in warm:
            client.get(path, headers=carol)

    def seen() -> set[tuple[Any, ...]]:
        return {flags for path in warm for flags in _flags(client.get(path, headers=carol).json)}

    assert (slug, True, None) in seen() and ("alice", None, True) in seen()
    assert client.delete(f"/api/articles/{slug}/favorite", headers=carol).status_code == 200
    assert (slug, False, None) in seen() and (slug, True, None) not in seen()
    assert client.delete("/api/profiles/alice/follow", headers=carol).status_code == 200
    assert ("alice", None, False) in seen() and ("alice", None, True) not in seen()
    assert client.post(f"/api/articles/{slug}/favorite", headers=carol).status_code == 200
    assert client.post("/api/profiles/alice/follow", headers=carol).status_code == 200
    assert (slug, True, None) in seen() and ("alice", None, True) in seen()


@pytest.mark.parametrize("write", ["favorite", "follow"])
def test_a_set_loaded_before_the_viewers_write_is_not_read_after_it(
    app: Flask, client: FlaskClient, api: Api, monkeypatch: pytest.MonkeyPatch, write: str
) -> None:
    """The viewer's write commits and bumps between the set's load and its store: the old set lands
    under the old generation, and the next read builds the set again."""
    seeded = _seed(api)
    alice, slug = auth(seeded["alice"]), seeded["slug"]
    path = f"/api/articles/{slug}"
    client.get(path, headers=alice)  # the entry is cached; alice's sets are not built yet
    load = personalize.members
    writes: list[int] = []

    def members_then_write(conn: Any, fact: personalize.Fact, viewer: int) -> list[int] | None:
        ids = load(conn, fact, viewer)
        if not writes and fact.field == ("favorited" if write == "favorite" else "following"):
            url = f"{path}/favorite" if write == "favorite" else "/api/profiles/carol/follow"
            writes.append(app.test_client().post(url, headers=alice).status_code)
        return ids

    monkeypatch.setattr(personalize, "members", members_then_write)
    monkeypatch.setattr("service.caching.cache.members", members_then_write)
    client.get(path, headers=alice)  # builds alice's sets: her write lands in between
    assert writes == [200]
    monkeypatch.undo()
    if write == "favorite":
        for _ in range(2):
            assert client.get(path, headers=alice).json["article"]["favorited"] is True  # type: ignore[index]
    else:
        carols = client.get("/api/profiles/carol", headers=alice)
        client.get("/api/profiles/carol", headers=alice)
        assert carols.json["profile"]["following"] is True  # type: ignore[index]
        assert client.get("/api/profiles/carol", headers=alice).json["profile"]["following"] is True  # type: ignore[index]


def test_a_viewer_past_the_set_limit_gets_flags_by_statement(
    app: Flask, client: FlaskClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    seeded = _seed(api)
    monkeypatch.setattr(personalize, "MAX_SET", 0)  # carol's one favorite is already too many
    carol, path = auth(seeded["carol"]), f"/api/articles/{seeded['slug']}"
    for _ in range(2):
        client.get(path, headers=carol)
    with count_statements(app) as statements:
        assert client.get(path, headers=carol).json["article"]["favorited"] is True  # type: ignore[index]
    assert len(statements) == 1  # the one batched statement, every time


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_favorite_that_changes_nothing_drops_no_cached_entry(
    app: Flask, client: FlaskClient, api: Api, method: str
) -> None:
    seeded = _seed(api)  # carol favorited the first article already
    carol, slug = auth(seeded["carol"]), seeded["slug"]
    if method == "DELETE":
        assert client.delete(f"/api/articles/{slug}/favorite", headers=carol).status_code == 200
    paths = ["/api/articles", f"/api/articles/{slug}", "/api/articles?favorited=carol"]
    for _ in range(2):
        for path in paths:
            client.get(path, headers=carol)
    repeat = client.open(f"/api/articles/{slug}/favorite", method=method, headers=carol)
    assert repeat.status_code == 200 and repeat.json["article"]["favorited"] is (method == "POST")  # type: ignore[index]
    with count_statements(app) as statements:
        for path in paths:
            assert client.get(path, headers=carol).status_code == 200
    assert statements == []


def _count_of(body: Any, slug: str) -> int:
    return int(next(a["favoritesCount"] for a in body["articles"] if a["slug"] == slug))


def test_a_favorite_drops_no_list_page_and_every_page_shows_its_count(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    """The pages stay cached; the article's number comes from its count's small entry (one
    statement for the first reader after the favorite, none after)."""
    seeded = _seed(api)  # carol favorited the first article: its count is 1
    alice, slug = auth(seeded["alice"]), seeded["slug"]
    pages = ["/api/articles", "/api/articles?tag=go", "/api/articles?author=alice"]
    for _ in range(2):
        for path in pages:
            client.get(path)
        client.get("/api/articles/feed", headers=auth(seeded["carol"]))
    assert all(_count_of(client.get(path).json, slug) == 1 for path in pages)
    assert client.post(f"/api/articles/{slug}/favorite", headers=alice).status_code == 200
    with count_statements(app) as statements:
        counts = [_count_of(client.get(path).json, slug) for path in pages]
        feed = client.get("/api/articles/feed", headers=auth(seeded["carol"])).json
    assert counts == [2, 2, 2] and _count_of(feed, slug) == 2
    assert len(statements) == 1 and "favorites_count" in statements[0]  # no page loaded again
    with count_statements(app) as statements:
        assert [_count_of(client.get(path).json, slug) for path in pages] == [2, 2, 2]
    assert statements == []
    mine = client.get("/api/articles?favorited=alice").json
    assert [a["slug"] for a in mine["articles"]] == [slug]  # her favorited page did change
    assert client.delete(f"/api/articles/{slug}/favorite", headers=alice).status_code == 200
    assert [_count_of(client.get(path).json, slug) for path in pages] == [1, 1, 1]
    assert client.get("/api/articles?favorited=alice").json["articlesCount"] == 0


def test_a_favorite_racing_a_list_fill_is_on_the_page_after_it(
    app: Flask, client: FlaskClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The favorite commits and bumps after the page's rows were read and before the page is
    stored: the page must not keep the old number under the new count generation."""
    from service.articles import repository

    seeded = _seed(api)
    alice, slug = auth(seeded["alice"]), seeded["slug"]
    read_rows = repository.list_articles
    writes: list[int] = []

    def rows_then_favorite(*args: Any, **kwargs: Any) -> Any:
        rows = read_rows(*args, **kwargs)
        if not writes:
            writes.append(app.test_client().post(f"/api/articles/{slug}/favorite", headers=alice).status_code)
        return rows

    monkeypatch.setattr(repository, "list_articles", rows_then_favorite)
    assert _count_of(client.get("/api/articles").json, slug) == 1  # read before the favorite
    assert writes == [200]
    monkeypatch.undo()
    for _ in range(3):
        assert _count_of(client.get("/api/articles").json, slug) == 2


def test_a_read_that_joins_a_fill_begun_before_a_favorite_shows_the_favorite(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    """A count is not part of the page's key, so a read sent after a favorite can meet a fill of the
    page that loaded before it (another request's, in this worker or another): it must still show
    the favorite. The fill in flight is stood in for by its result, the page as loaded before."""
    from gevent.event import AsyncResult

    from service.articles.cache_keys import list_key
    from service.articles.schemas import ListQuery

    seeded = _seed(api)
    alice, slug = auth(seeded["alice"]), seeded["slug"]
    cache = app.extensions["shared_cache"]
    key = list_key(None, None, None, ListQuery().limit, 0)
    with app.app_context():
        assert client.get("/api/articles").status_code == 200  # the page is filled
        before = cache._find(key).value
        assert _count_of(client.get("/api/articles").json, slug) == 1
        assert client.post(f"/api/articles/{slug}/favorite", headers=alice).status_code == 200
        cache.bump(["lists"])  # the page's next read misses ...
        versioned = cache._find(key).key
    loading = AsyncResult()
    loading.set(before)  # ... and meets a fill that loaded before the favorite
    cache._inflight[versioned] = loading
    try:
        assert _count_of(client.get("/api/articles").json, slug) == 2
    finally:
        cache._inflight.pop(versioned, None)
