"""Long comment threads: bounded pages a spec client can discover and follow to the end.

The RealWorld spec returns every comment; this API returns pages of at most `limit` (default 100),
so each page says how many there are (`commentsCount`) and where the next one is (an RFC 8288
`Link: <...>; rel="next"` header), and both stay right after comments are added or deleted
(pages are cached, see service/comments/cache_keys.py comments_key).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from flask.testing import FlaskClient
from sqlalchemy import text

from service.storage.db import get_db
from tests.conftest import Api, auth, count_statements

NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


def page(client: FlaskClient, url: str) -> tuple[dict[str, Any], str | None]:
    """The body of one page and the absolute URL of the next one (None on the last page)."""
    resp = client.get(url)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    found = NEXT.search(resp.headers.get("Link", ""))
    return resp.json, (urljoin(url, found[1]) if found else None)


def add_comments(client: FlaskClient, slug: str, token: str, count: int) -> None:
    for i in range(count):
        resp = client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": f"c{i}"}}, headers=auth(token))
        assert resp.status_code == 200


def test_a_long_thread_is_paged_with_a_next_link_to_the_end(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    slug = api.create_article(token, "Popular")["slug"]
    add_comments(client, slug, token, 150)
    with client.application.app_context(), get_db().read() as conn:
        ids = [row[0] for row in conn.execute(text("SELECT id FROM comments ORDER BY id DESC"))]

    first, next_url = page(client, f"http://localhost/api/articles/{slug}/comments")
    assert len(first["comments"]) == 100
    assert first["commentsCount"] == 150
    assert next_url is not None
    assert urlsplit(next_url).path == f"/api/articles/{slug}/comments"
    assert parse_qs(urlsplit(next_url).query) == {"limit": ["100"], "offset": ["100"]}

    second, after = page(client, next_url)
    assert len(second["comments"]) == 50
    assert second["commentsCount"] == 150
    assert after is None
    assert [c["id"] for c in first["comments"] + second["comments"]] == ids


def test_the_next_link_keeps_the_page_size_asked_for(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    slug = api.create_article(token, "Small pages")["slug"]
    add_comments(client, slug, token, 5)
    url: str | None = f"http://localhost/api/articles/{slug}/comments?limit=2"
    seen = []
    while url is not None:
        body, url = page(client, url)
        seen.append([c["body"] for c in body["comments"]])
        assert body["commentsCount"] == 5
    assert seen == [["c4", "c3"], ["c2", "c1"], ["c0"]]


def test_count_and_next_link_follow_new_and_deleted_comments_through_the_cache(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    slug = api.create_article(token, "Cached")["slug"]
    add_comments(client, slug, token, 2)
    url = f"http://localhost/api/articles/{slug}/comments?limit=2"
    body, next_url = page(client, url)
    assert (body["commentsCount"], next_url) == (2, None)
    page(client, url)  # now answered from the cache

    add_comments(client, slug, token, 1)
    body, next_url = page(client, url)
    assert body["commentsCount"] == 3
    assert next_url is not None
    assert [c["body"] for c in page(client, next_url)[0]["comments"]] == ["c0"]

    oldest = page(client, next_url)[0]["comments"][0]["id"]
    assert client.delete(f"/api/articles/{slug}/comments/{oldest}", headers=auth(token)).status_code == 204
    body, next_url = page(client, url)
    assert (body["commentsCount"], next_url) == (2, None)


def test_the_openapi_document_tells_how_to_page_through_comments(client: FlaskClient) -> None:
    doc = client.get("/api/openapi.json").json
    operation = doc["paths"]["/api/articles/{slug}/comments"]["get"]
    params = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert params["limit"]["schema"]["default"] == 100
    assert params["limit"]["description"] and params["offset"]["description"]
    link = operation["responses"]["200"]["headers"]["Link"]
    assert 'rel="next"' in link["description"]
    assert link["schema"] == {"type": "string"}
    schema = doc["components"]["schemas"]["MultipleCommentsResponse"]
    assert "commentsCount" in schema["required"]
    assert "commentsCount" in operation["description"]


def test_a_page_is_a_constant_number_of_statements(client: FlaskClient, api: Api) -> None:
    token = api.register("alice")
    slug = api.create_article(token, "Counted")["slug"]
    for name in ("bob", "carol", "dave"):
        add_comments(client, slug, api.register(name), 10)
    with count_statements(client.application) as statements:
        body, _ = page(client, f"http://localhost/api/articles/{slug}/comments?limit=20")
    # The article, the page, the count; the viewer's flags need a token (none here).
    assert len(body["comments"]) == 20
    assert len(statements) == 3, statements
    with count_statements(client.application) as statements:
        assert client.get(f"/api/articles/{slug}/comments?limit=20", headers=auth(token)).status_code == 200
    assert len(statements) <= 2, statements  # from the cache: the token's account check and the flags
