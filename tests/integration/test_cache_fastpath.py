"""Cache hits answered ahead of Flask (service.caching.fastpath): the same answer, no SQL, and
everything it is unsure of left to Flask."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import Client

from service.caching.fastpath import FastPath
from service.runtime import lifecycle
from tests.conftest import Api, auth, build_app, count_statements
from tests.integration.helpers import header_list, served_fast
from tests.live import free_port

REQUEST_ID = "fast-1"


def _seed(api: Api) -> dict[str, str]:
    token = api.register("alice")
    api.register("bob")
    first = api.create_article(token, title="First", tags=["go", "py"])
    api.create_article(token, title="Second", tags=["py"])
    slug = first["slug"]
    for n in range(3):
        resp = api.client.post(
            f"/api/articles/{slug}/comments", json={"comment": {"body": f"c{n}"}}, headers=auth(token)
        )
        assert resp.status_code == 200
    assert api.client.post(f"/api/articles/{slug}/favorite", headers=auth(token)).status_code == 200
    return {"slug": slug, "token": token}


def _paths(slug: str) -> list[str]:
    return [
        "/api/articles",
        "/api/articles?tag=py&limit=1&offset=1",
        "/api/articles?author=alice&limit=5",
        "/api/articles?favorited=alice&tag=go&limit=5&unknown=1",
        f"/api/articles/{slug}",
        "/api/profiles/alice",
        "/api/tags",
        f"/api/articles/{slug}/comments",
        f"/api/articles/{slug}/comments?limit=2",
        f"/api/articles/{slug}/comments?limit=2&offset=1",
    ]


def test_a_fast_path_hit_is_the_answer_flask_gave_byte_for_byte(app: Flask, client: FlaskClient, api: Api) -> None:
    assert isinstance(app.wsgi_app, FastPath)
    seeded = _seed(api)
    for path in _paths(seeded["slug"]):
        before = served_fast(app)
        filled = client.get(path, headers={"X-Request-Id": REQUEST_ID})  # a miss: Flask renders and fills
        assert served_fast(app) == before, path
        hit = client.get(path, headers={"X-Request-Id": REQUEST_ID})
        assert served_fast(app) == before + 1, path
        assert (hit.status_code, hit.get_data()) == (200, filled.get_data()), path
        assert header_list(hit) == header_list(filled), path
        assert filled.status_code == 200, path


def test_a_fast_path_hit_sends_no_sql(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    for path in _paths(seeded["slug"]):
        assert client.get(path).status_code == 200
        with count_statements(app) as statements:
            assert client.get(path).status_code == 200
        assert statements == [], path


def test_if_none_match_and_head_through_the_fast_path_match_flask(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    inner = Client(app.wsgi_app.app)  # type: ignore[attr-defined]  # Flask alone, on the same cache
    for path in (f"/api/articles/{seeded['slug']}", "/api/tags", f"/api/articles/{seeded['slug']}/comments?limit=2"):
        etag = client.get(path).headers["ETag"]
        for method, extra in (("GET", {"If-None-Match": etag}), ("HEAD", {}), ("HEAD", {"If-None-Match": etag})):
            headers = {"X-Request-Id": REQUEST_ID, **extra}
            before = served_fast(app)
            fast = client.open(path, method=method, headers=headers)
            assert served_fast(app) == before + 1
            slow = inner.open(path, method=method, headers=headers)
            assert served_fast(app) == before + 1
            assert fast.status_code == slow.status_code == (304 if extra else 200), (path, method)
            assert fast.get_data() == slow.get_data() == b""
            assert header_list(fast) == header_list(slow), (path, method)
    etag = client.get("/api/tags").headers["ETag"]
    for value in ("*", f"W/{etag}", f'"other", {etag}', '"other"', "garbage", ""):
        fast = client.get("/api/tags", headers={"If-None-Match": value})
        slow = inner.get("/api/tags", headers={"If-None-Match": value})
        assert fast.status_code == slow.status_code, value
    assert client.get("/api/tags", headers={"If-None-Match": "*"}).status_code == 304


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Token not-a-token"},
        {"If-Match": '"x"'},
        {"Range": "bytes=0-1"},
        {"If-Modified-Since": "Sun, 29 Nov 2026 10:00:00 GMT"},
    ],
)
def test_requests_with_a_token_or_other_conditions_go_to_flask(
    app: Flask, client: FlaskClient, api: Api, headers: dict[str, str]
) -> None:
    seeded = _seed(api)
    path = f"/api/articles/{seeded['slug']}"
    client.get(path)
    before = served_fast(app)
    resp = client.get(path, headers=headers)
    assert served_fast(app) == before
    if "Authorization" in headers:
        assert resp.status_code == 401


def test_a_signed_in_read_still_gets_its_own_flags(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    path = f"/api/articles/{seeded['slug']}"
    assert client.get(path).json["article"]["favorited"] is False  # type: ignore[index]
    assert client.get(path).json["article"]["favorited"] is False  # type: ignore[index]
    mine = client.get(path, headers=auth(seeded["token"]))
    assert mine.json["article"]["favorited"] is True  # type: ignore[index]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=abc", "offset=-1", "limit=101", "tag=" + "x" * 300, "tag=a%00b", "limit=1.5"]
)
def test_a_query_the_view_refuses_goes_to_flask(app: Flask, client: FlaskClient, api: Api, query: str) -> None:
    _seed(api)
    client.get("/api/articles")
    before = served_fast(app)
    assert client.get(f"/api/articles?{query}").status_code == 422
    assert served_fast(app) == before


def test_misses_other_methods_and_unknown_paths_go_to_flask(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    before = served_fast(app)
    assert client.get("/api/profiles/nobody").status_code == 404
    assert client.get("/api/profiles/nobody").status_code == 404  # a 404 is never cached
    assert client.get("/api/articles/feed").status_code == 401
    assert client.get("/api/tags/").status_code in (308, 404)
    assert client.options("/api/tags").status_code == 204
    assert client.get(f"/api/articles/{seeded['slug']}").status_code == 200  # the miss that fills
    assert served_fast(app) == before
    assert client.get(f"/api/articles/{seeded['slug']}").status_code == 200
    assert served_fast(app) == before + 1


def test_a_draining_process_leaves_every_request_to_flask(app: Flask, client: FlaskClient, api: Api) -> None:
    _seed(api)
    client.get("/api/tags")
    before = served_fast(app)
    lifecycle.begin_draining()
    try:
        assert client.get("/api/tags").status_code == 200
    finally:
        lifecycle.reset()
    assert served_fast(app) == before


def test_a_write_is_seen_by_the_next_fast_read(app: Flask, client: FlaskClient, api: Api) -> None:
    seeded = _seed(api)
    path = f"/api/articles/{seeded['slug']}"
    client.get(path)
    assert client.get(path).json["article"]["body"] == "b"  # type: ignore[index]
    update = {"article": {"body": "changed"}}
    assert client.put(path, json=update, headers=auth(seeded["token"])).status_code == 200
    assert client.get(path).json["article"]["body"] == "changed"  # type: ignore[index]
    assert client.get(path).json["article"]["body"] == "changed"  # type: ignore[index]


def test_with_cors_an_origin_goes_to_flask_and_gets_its_headers(tmp_path: Any) -> None:
    app = build_app(f"sqlite:///{tmp_path}/cors.db", CORS_ORIGINS="https://app.example.com")
    client = app.test_client()
    client.get("/api/tags")
    before = served_fast(app)
    resp = client.get("/api/tags", headers={"Origin": "https://app.example.com"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert served_fast(app) == before
    assert "Access-Control-Allow-Origin" not in client.get("/api/tags").headers
    assert served_fast(app) == before + 1


def test_without_a_cache_there_is_no_fast_path(tmp_path: Any) -> None:
    app = build_app(f"sqlite:///{tmp_path}/nocache.db", CACHE_TYPE="NullCache")
    assert not isinstance(app.wsgi_app, FastPath)
    assert app.test_client().get("/api/tags").status_code == 200


@pytest.mark.postgres
def test_with_redis_down_reads_go_to_flask_and_the_database(pg_url: str) -> None:
    app = build_app(pg_url, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", CACHE_TYPE="RedisCache")
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/tags").status_code == 200
    assert served_fast(app) == 0
    assert app.extensions["shared_cache"].stats["errors"] >= 1


def test_an_error_in_the_fast_path_leaves_the_request_to_flask(
    app: Flask, client: FlaskClient, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(api)
    expected = client.get("/api/tags").get_data()

    def broken(*_args: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(app.wsgi_app, "_etag", broken)
    before = served_fast(app)
    resp = client.get("/api/tags")
    assert (resp.status_code, resp.get_data()) == (200, expected)
    assert served_fast(app) == before
