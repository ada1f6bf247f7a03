"""What a client sees from the real server (gunicorn + gevent), before and around the app.

gunicorn answers oversized and malformed requests itself (its `limit_request_*` settings in
gunicorn.conf.py): a 100 KB Authorization header, too many headers, an over-long request line or
garbage are refused with a 4xx and never reach the app. A body over MAX_CONTENT_LENGTH is answered
413 in the error shape, readable by a client that is still sending it (not reset). Neither
gunicorn's answers nor the app's name a server version, and the app's security and CORS headers
(CORS_ORIGINS from the environment) arrive through it.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.live import Answer, live_server, post_body

ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database = Path(tmp_path_factory.mktemp("live")) / "live.db"
    with live_server(f"sqlite:///{database}", workers=1, CORS_ORIGINS=ORIGIN) as url:
        yield url


def request(base: str, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None) -> Any:
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        data = None if body is None else json.dumps(body).encode()
        conn.request(
            method,
            path,
            body=data,
            headers={**({"Content-Type": "application/json"} if data else {}), **(headers or {})},
        )
        resp = conn.getresponse()
        resp.body = resp.read()
        return resp
    finally:
        conn.close()


def raw(base: str, payload: bytes) -> tuple[int, str]:
    """Send bytes as they are; the status and the head of the answer."""
    parts = urlsplit(base)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(payload)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head


def assert_no_version(headers: str) -> None:
    server = re.search(r"(?im)^server:\s*(.*)$", headers)
    assert server is None or not re.search(r"\d", server[1]), server and server[1]
    assert not re.search(r"(?im)^x-powered-by:", headers)


def test_app_responses_name_no_server_version_and_carry_the_security_headers(base: str) -> None:
    for method, path in (("GET", "/api/tags"), ("GET", "/api/user"), ("GET", "/nope"), ("GET", "/api/docs")):
        resp = request(base, method, path)
        assert resp.status < 500
        assert_no_version(str(resp.headers))
        assert resp.getheader("X-Content-Type-Options") == "nosniff"
        assert "frame-ancestors 'none'" in resp.getheader("Content-Security-Policy")


def test_cors_origins_from_the_environment_reach_the_browser(base: str) -> None:
    allowed = request(base, "GET", "/api/tags", {"Origin": ORIGIN})
    assert allowed.getheader("Access-Control-Allow-Origin") == ORIGIN
    other = request(base, "GET", "/api/tags", {"Origin": "https://evil.example"})
    assert other.getheader("Access-Control-Allow-Origin") is None
    preflight = request(base, "OPTIONS", "/api/user", {"Origin": ORIGIN, "Access-Control-Request-Method": "PUT"})
    assert preflight.status == 204
    assert "PUT" in preflight.getheader("Access-Control-Allow-Methods")


@pytest.mark.parametrize(
    ("label", "payload"),
    [
        (
            "100 KB Authorization header",
            b"GET /api/user HTTP/1.1\r\nHost: x\r\nAuthorization: Token " + b"A" * 100_000 + b"\r\n\r\n",
        ),
        (
            "101 headers",
            b"GET /api/tags HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101)) + b"\r\n",
        ),
        ("5,000-byte request line", b"GET /api/articles?tag=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("garbage request line", b"\x16\x03\x01 hello\r\n\r\n"),
        ("header without a colon", b"GET /api/tags HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
        ("NUL in a header", b"GET /api/tags HTTP/1.1\r\nHost: x\r\nAuthorization: Token a\x00b\r\n\r\n"),
    ],
)
def test_gunicorn_refuses_oversized_and_malformed_requests_with_a_4xx_and_no_version(
    base: str, label: str, payload: bytes
) -> None:
    status, head = raw(base, payload)
    assert 400 <= status < 500, (label, head)
    assert_no_version(head)


def test_a_long_token_within_the_header_limits_reaches_the_app_and_is_a_401(base: str) -> None:
    resp = request(base, "GET", "/api/user", {"Authorization": "Token " + "A" * 8000})
    assert resp.status == 401
    assert json.loads(resp.body) == {"errors": {"body": ["missing or invalid authorization token"]}}
    assert resp.getheader("WWW-Authenticate") == "Token"


OVERSIZED = 20 * 1024 * 1024


def assert_413_in_the_error_shape(answer: Answer) -> None:
    assert answer.status == 413, answer
    assert json.loads(answer.body) == {"errors": {"body": ["request body is too large"]}}
    assert answer.error == "", answer  # e.g. a reset while the client was still sending


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_20_mb_body_is_answered_413_in_the_error_shape_and_not_reset(base: str, chunked: bool, close: bool) -> None:
    answer = post_body(base, "/api/users", OVERSIZED, chunked=chunked, close=close)
    assert_413_in_the_error_shape(answer)
    # What was not read of the body is not kept for a next request: the server closes after the answer.
    assert answer.headers["connection"] == "close" and answer.closed, answer


def test_a_client_that_stops_sending_mid_body_gets_its_413_and_the_close_soon_after(base: str) -> None:
    started = time.monotonic()
    answer = post_body(base, "/api/users", OVERSIZED, send=2 * 1024 * 1024)
    assert_413_in_the_error_shape(answer)
    assert answer.headers["connection"] == "close" and answer.closed, answer
    assert time.monotonic() - started < 5  # the rest of the body is not waited for


def test_the_server_still_serves_after_all_that(base: str) -> None:
    assert request(base, "GET", "/healthz").status == 200
