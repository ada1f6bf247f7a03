"""The per-account log-in limit holds whatever framing or padding the body uses.

The account is read from the body, so every way of sending a body the view accepts must reach the
same bucket: Content-Length or chunked (no Content-Length), padded with whitespace past any
small size, the email in odd casing or with spaces around it. A body the view does
not accept (over MAX_CONTENT_LENGTH, gzip, not JSON) never reaches a password check.
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from flask.testing import FlaskClient

from tests.integration.test_rate_limits import BIG, assert_limited, limited_app, register
from tests.live import live_server

GUESS = {"user": {"email": "alice@example.com", "password": "wrong-password"}}


def send(client: FlaskClient, body: bytes, *, chunked: bool, address: str, **headers: str) -> Any:
    """POST /api/users/login as gunicorn hands it over: chunked bodies come without Content-Length."""
    environ = {"REMOTE_ADDR": address}
    if chunked:
        # gunicorn de-chunks the body and marks the stream as terminated; werkzeug then reads it
        # bounded by MAX_CONTENT_LENGTH instead of taking it as empty.
        environ["wsgi.input_terminated"] = True  # type: ignore[assignment]
        return client.post(
            "/api/users/login",
            input_stream=io.BytesIO(body),
            headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked", **headers},
            environ_base=environ,
        )
    return client.post(
        "/api/users/login",
        data=body,
        headers={"Content-Type": "application/json", **headers},
        environ_base=environ,
    )


def padded(email: str, size: int) -> bytes:
    """A valid log-in body of at least `size` bytes: whitespace between its JSON tokens."""
    return json.dumps({"user": {"email": email, "password": "wrong-password"}}).replace(", ", "," + " " * size).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(lambda i: json.dumps(GUESS).encode(), id="plain"),
        pytest.param(lambda i: padded("alice@example.com", 64 * 1024), id="padded-past-16KiB"),
        pytest.param(lambda i: json.dumps(GUESS, indent=4000).encode(), id="whitespace"),
        pytest.param(
            lambda i: json.dumps(
                {"user": {"email": [" Alice@Example.COM", "ALICE@example.com "][i % 2], "password": "wrong"}}
            ).encode(),
            id="odd-casing",
        ),
    ],
)
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_the_account_limit_holds_whatever_the_framing_of_the_body(tmp_path: Path, chunked: bool, body: Any) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ACCOUNT="3/minute").test_client()
    register(client, "alice")
    # Every guess from its own address: only the per-account limit can stop them.
    statuses = [send(client, body(i), chunked=chunked, address=f"10.1.0.{i}").status_code for i in range(5)]
    assert statuses == [401, 401, 401, 429, 429]
    # The account is closed whichever framing the next attempt uses.
    assert_limited(send(client, json.dumps(GUESS).encode(), chunked=not chunked, address="10.1.1.1"))


def test_bodies_the_view_refuses_reach_no_password_check_and_stay_bounded(tmp_path: Path) -> None:
    client = limited_app(tmp_path, RATELIMIT_LOGIN_ACCOUNT="1/minute", MAX_CONTENT_LENGTH=32 * 1024).test_client()
    register(client, "alice")
    too_big = padded("alice@example.com", 40 * 1024)
    for chunked in (False, True):
        assert send(client, too_big, chunked=chunked, address="10.2.0.1").status_code == 413
    # The app does not decode Content-Encoding: a gzip body is not JSON to it, whatever the header says.
    compressed = gzip.compress(json.dumps(GUESS).encode())
    for chunked in (False, True):
        resp = send(client, compressed, chunked=chunked, address="10.2.0.2", **{"Content-Encoding": "gzip"})
        assert resp.status_code in (415, 422)
    # None of those was a guess: the one attempt the account allows is still there, and a chunked
    # body of exactly MAX_CONTENT_LENGTH bytes is not too large.
    exact = padded("alice@example.com", 32 * 1024 - len(padded("alice@example.com", 0)))
    assert len(exact) == 32 * 1024
    assert send(client, exact, chunked=True, address="10.2.0.3").status_code == 401
    assert_limited(send(client, json.dumps(GUESS).encode(), chunked=False, address="10.2.0.4"))


def _live_login(base: str, body: bytes, *, chunked: bool) -> int:
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        conn.putrequest("POST", "/api/users/login")
        conn.putheader("Content-Type", "application/json")
        if chunked:
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for start in range(0, len(body), 7):  # several chunks, split inside the JSON
                piece = body[start : start + 7]
                conn.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            conn.send(b"0\r\n\r\n")
        else:
            conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_a_live_server_limits_chunked_log_in_attempts_per_account(tmp_path: Path) -> None:
    env = {
        "RATELIMIT_ENABLED": "1",
        "RATELIMIT_LOGIN_ACCOUNT": "3/minute",
        "RATELIMIT_LOGIN_ADDRESS": BIG,
        "RATELIMIT_REGISTER_ADDRESS": BIG,
    }
    with live_server(f"sqlite:///{tmp_path}/{time.time_ns()}.db", workers=1, **env) as base:
        user = {"user": {"username": "alice", "email": "alice@example.com", "password": "password123"}}
        conn = http.client.HTTPConnection(urlsplit(base).hostname, urlsplit(base).port, timeout=10)
        conn.request("POST", "/api/users", json.dumps(user), {"Content-Type": "application/json"})
        assert conn.getresponse().status == 201
        conn.close()
        guess = json.dumps(GUESS).encode()
        assert [_live_login(base, guess, chunked=True) for _ in range(5)] == [401, 401, 401, 429, 429]
        assert _live_login(base, guess, chunked=False) == 429
