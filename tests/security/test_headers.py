"""Security headers on every response, and CORS only as configured (OWASP API8 misconfiguration).

What gunicorn itself adds (its `Server` header, its own error pages) is in test_live_server.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

import config
from config import ConfigError
from service.api import headers
from tests.conftest import Api, auth, build_app
from tests.security.helpers import operations

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
APP = "https://app.example.com"
DEV = "http://localhost:3000"
EVIL = "https://evil.example"


@pytest.fixture
def sqlite_app(tmp_path: Path) -> Flask:
    return build_app(f"sqlite:///{tmp_path}/headers.db")


def cors_headers(resp: Any) -> list[str]:
    return [name for name, _ in resp.headers if name.lower().startswith("access-control-")]


def assert_security_headers(resp: Any, what: str) -> None:
    for name, value in SECURITY.items():
        assert resp.headers.get(name) == value, (what, name, dict(resp.headers))
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp, (what, csp)
    if resp.mimetype != "text/html":
        assert "default-src 'none'" in csp, (what, csp)


def every_kind_of_response(app: Flask) -> list[tuple[str, Any]]:
    """(label, response) for each operation's success and for every error status the app makes."""

    def boom() -> str:
        raise RuntimeError("boom")

    app.add_url_rule("/api/boom", "boom", boom)
    client = app.test_client()
    api = Api(client)
    token = api.register("alice")
    slug = api.create_article(token, "Headers")["slug"]
    comment = client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "c"}}, headers=auth(token))
    values = {"slug": slug, "username": "alice", "comment_id": comment.json["comment"]["id"]}
    answers = []
    for op in operations(app):
        if op.method == "get":
            answers.append((op.key, client.get(op.url(**values), headers=auth(token))))
    etag = client.get("/api/tags").headers["ETag"]
    answers += [
        ("304", client.get("/api/tags", headers={"If-None-Match": etag})),
        (
            "201",
            client.post(
                "/api/articles", json={"article": {"title": "t", "description": "d", "body": "b"}}, headers=auth(token)
            ),
        ),
        ("204", client.delete(f"/api/articles/{slug}/comments/{values['comment_id']}", headers=auth(token))),
        ("401", client.get("/api/user")),
        ("403", client.delete(f"/api/articles/{slug}", headers=auth(api.register("bob")))),
        ("404", client.get("/api/nothing-here")),
        ("405", client.patch("/api/user")),
        (
            "413",
            client.post(
                "/api/users", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1), content_type="application/json"
            ),
        ),
        ("415", client.post("/api/users", data=b"{}", content_type="text/plain")),
        ("422", client.post("/api/users", data=b"{", content_type="application/json")),
        ("500", client.get("/api/boom")),
        ("static file", client.get("/api/docs/static/swagger-ui/swagger-ui.css")),
        ("OPTIONS", client.options("/api/articles")),
    ]
    return answers


def test_every_response_carries_the_security_headers(sqlite_app: Flask) -> None:
    answers = every_kind_of_response(sqlite_app)
    statuses = {resp.status_code for _, resp in answers}
    assert {200, 201, 204, 304, 401, 403, 404, 405, 413, 415, 422, 500} <= statuses
    for label, resp in answers:
        assert_security_headers(resp, label)


def test_the_docs_page_may_not_be_framed_but_may_load_its_own_script_and_styles(sqlite_app: Flask) -> None:
    resp = sqlite_app.test_client().get("/api/docs")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert_security_headers(resp, "docs")
    # Swagger UI runs an inline bootstrap script and inline styles and SVGs: a policy that
    # restricts scripts, styles or images would leave the page blank.
    csp = resp.headers["Content-Security-Policy"]
    assert not {"default-src", "script-src", "style-src", "img-src", "connect-src"} & set(csp.replace(";", " ").split())


def test_without_cors_origins_no_cors_header_is_ever_sent(sqlite_app: Flask) -> None:
    assert sqlite_app.config["CORS_ORIGINS"] == ""
    client = sqlite_app.test_client()
    preflight = {
        "Origin": APP,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization",
    }
    for resp in (
        client.get("/api/tags", headers={"Origin": APP}),
        client.get("/api/user", headers={"Origin": APP}),
        client.options("/api/articles/some-slug", headers=preflight),
    ):
        assert not cors_headers(resp), dict(resp.headers)


@pytest.mark.parametrize(
    ("url", "methods"),
    [
        ("/api/articles", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("/api/articles/some-slug", {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"}),
        ("/api/user", {"GET", "HEAD", "PUT", "OPTIONS"}),
        ("/healthz", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_options_answers_204_with_allow_and_no_body(sqlite_app: Flask, url: str, methods: set[str]) -> None:
    resp = sqlite_app.test_client().options(url)
    assert resp.status_code == 204
    assert set(resp.headers["Allow"].split(", ")) == methods
    assert resp.data == b""
    assert "Content-Type" not in resp.headers
    assert_security_headers(resp, f"OPTIONS {url}")


def test_options_on_an_unknown_url_is_the_json_404(sqlite_app: Flask) -> None:
    resp = sqlite_app.test_client().options("/api/nothing-here")
    assert resp.status_code == 404 and resp.mimetype == "application/json"


@pytest.fixture
def cors_client(tmp_path: Path) -> FlaskClient:
    return build_app(f"sqlite:///{tmp_path}/cors.db", CORS_ORIGINS=f"{APP}, {DEV}/").test_client()


def test_a_configured_origin_may_read_responses_errors_included(cors_client: FlaskClient) -> None:
    for resp in (
        cors_client.get("/api/tags", headers={"Origin": APP}),
        cors_client.get("/api/user", headers={"Origin": DEV}),
    ):
        assert resp.headers["Access-Control-Allow-Origin"] in (APP, DEV)
        assert "Origin" in resp.headers["Vary"]
        assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
        assert "Access-Control-Allow-Credentials" not in resp.headers


def test_any_other_origin_gets_no_cors_permission(cors_client: FlaskClient) -> None:
    for origin in (EVIL, "null", APP + ".evil.example", "http://app.example.com", APP.upper()):
        resp = cors_client.get("/api/tags", headers={"Origin": origin})
        assert resp.status_code == 200
        assert "Access-Control-Allow-Origin" not in resp.headers, origin
        assert "Origin" in resp.headers["Vary"]  # a shared cache must not hand this answer to APP


def test_a_preflight_from_a_configured_origin_lists_the_urls_methods_and_the_headers_the_api_reads(
    cors_client: FlaskClient,
) -> None:
    preflight = {
        "Origin": APP,
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    resp = cors_client.options("/api/articles/some-slug", headers=preflight)
    assert resp.status_code == 204 and resp.data == b""  # like every OPTIONS answer
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert {"GET", "PUT", "DELETE"} <= set(resp.headers["Access-Control-Allow-Methods"].split(", "))
    allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "if-match", "idempotency-key"} <= allowed
    assert int(resp.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in resp.headers
    refused = cors_client.options("/api/articles/some-slug", headers={**preflight, "Origin": EVIL})
    assert not cors_headers(refused)


def test_a_wildcard_origin_never_comes_with_credentials(tmp_path: Path) -> None:
    client = build_app(f"sqlite:///{tmp_path}/star.db", CORS_ORIGINS="*").test_client()
    resp = client.get("/api/tags", headers={"Origin": EVIL})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in resp.headers
    preflight = client.options("/api/user", headers={"Origin": EVIL, "Access-Control-Request-Method": "PUT"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in preflight.headers


@pytest.mark.parametrize(
    "value",
    [
        "app.example.com",
        "https://app.example.com/path",
        "ftp://app.example.com",
        "*, https://app.example.com",
        "https://",
    ],
)
def test_a_cors_origins_value_that_is_not_a_list_of_origins_stops_the_app(value: str) -> None:
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        headers.parse_origins(value)


def test_cors_origins_is_read_from_the_environment() -> None:
    settings = config.load({"CORS_ORIGINS": f"{APP},{DEV}"})
    assert headers.parse_origins(settings["CORS_ORIGINS"]) == {APP, DEV}
