"""Compressed bodies, once (service.caching.encoding): a cached page's gzip variant is stored when
the page is filled and sent as it is to anonymous clients that accept gzip, whenever the body they
would get is the stored one."""

from __future__ import annotations

import gzip

from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Api, auth
from tests.integration.helpers import served_fast

GZIP = {"Accept-Encoding": "gzip, deflate, br"}


def _seed(api: Api) -> tuple[str, list[str]]:
    token = api.register("alice")
    slugs = [api.create_article(token, title=f"Article number {n}", tags=["go", "py"])["slug"] for n in range(8)]
    return token, slugs


def test_a_cached_page_goes_gzip_to_a_client_that_accepts_it_and_plain_to_others(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    _seed(api)
    plain = client.get("/api/articles")  # a miss: Flask answers plain and fills the page and its variant
    assert len(plain.get_data()) > 1024 and "Content-Encoding" not in plain.headers
    assert plain.headers["Vary"] == "Authorization, Accept-Encoding"
    before = served_fast(app)
    packed = client.get("/api/articles", headers=GZIP)
    assert served_fast(app) == before + 1
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Authorization, Accept-Encoding"
    assert int(packed.headers["Content-Length"]) == len(packed.get_data()) < len(plain.get_data()) / 2
    assert gzip.decompress(packed.get_data()) == plain.get_data()
    assert packed.headers["ETag"] != plain.headers["ETag"]  # a strong ETag differs between codings
    again = client.get("/api/articles", headers={**GZIP, "If-None-Match": packed.headers["ETag"]})
    assert again.status_code == 304 and again.get_data() == b""
    head = client.head("/api/articles", headers=GZIP)
    assert head.headers["Content-Encoding"] == "gzip" and head.get_data() == b""
    for refused in ("gzip;q=0", "br", "identity"):
        other = client.get("/api/articles", headers={"Accept-Encoding": refused})
        assert "Content-Encoding" not in other.headers and other.get_data() == plain.get_data(), refused


def test_a_short_body_and_a_signed_in_one_go_plain(app: Flask, client: FlaskClient, api: Api) -> None:
    token, _ = _seed(api)
    for _ in range(2):
        profile = client.get("/api/profiles/alice", headers=GZIP)
        mine = client.get("/api/articles", headers={**GZIP, **auth(token)})
        mine = client.get("/api/articles", headers={**GZIP, **auth(token)})
    assert "Content-Encoding" not in profile.headers and profile.json["profile"]["username"] == "alice"  # type: ignore[index]
    assert "Content-Encoding" not in mine.headers and len(mine.json["articles"]) == 8  # type: ignore[index]


def test_a_page_whose_count_moved_on_goes_plain_with_the_new_number(app: Flask, client: FlaskClient, api: Api) -> None:
    token, slugs = _seed(api)
    client.get("/api/articles")
    assert client.get("/api/articles", headers=GZIP).headers["Content-Encoding"] == "gzip"
    assert client.post(f"/api/articles/{slugs[3]}/favorite", headers=auth(token)).status_code == 200
    for _ in range(2):
        after = client.get("/api/articles", headers=GZIP)
        assert "Content-Encoding" not in after.headers
        counts = {a["slug"]: a["favoritesCount"] for a in after.json["articles"]}  # type: ignore[index]
        assert counts[slugs[3]] == 1 and sum(counts.values()) == 1
