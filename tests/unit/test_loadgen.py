"""The load generator of the failover tests counts a response cut after its head as a failed request."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.loadgen import Client, Outcome

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
ANSWERS = {
    "whole": HEAD + b"Content-Length: 2\r\n\r\n{}",
    "head only": HEAD + b"Content-Length: 289\r\n\r\n",
    "half the body": HEAD + b'Content-Length: 10\r\n\r\n{"a":',
    "chunked, cut": HEAD + b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"a":',
}


@pytest.fixture
def server() -> Iterator[tuple[str, list[bytes]]]:
    """A server that sends the next queued answer as it is, then closes the connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    queue: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(queue.pop(0))

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", queue
    listener.close()


@pytest.mark.parametrize("answer", ["head only", "half the body", "chunked, cut"])
def test_a_body_cut_after_the_head_is_a_failed_request_marked_truncated(
    server: tuple[str, list[bytes]], answer: str
) -> None:
    base, queue = server
    outcomes: list[Outcome] = []
    queue.append(ANSWERS[answer])
    resp = Client(base, timeout=5, record=outcomes.append).request("GET", "/x", kind="read")
    assert resp.status == 0
    [outcome] = outcomes
    assert not outcome.ok and outcome.truncated, outcome
    assert outcome.error.startswith("TruncatedBody: truncated body: status 200 received"), outcome.error


def test_a_head_answer_with_a_content_length_and_no_body_is_a_success(server: tuple[str, list[bytes]]) -> None:
    base, queue = server
    outcomes: list[Outcome] = []
    queue.append(HEAD + b"Content-Length: 289\r\n\r\n")
    resp = Client(base, timeout=5, record=outcomes.append).request("HEAD", "/x", kind="head")
    assert resp.status == 200 and outcomes[0].ok and not outcomes[0].truncated


def test_a_whole_body_is_a_success(server: tuple[str, list[bytes]]) -> None:
    base, queue = server
    outcomes: list[Outcome] = []
    queue.append(ANSWERS["whole"])
    resp = Client(base, timeout=5, record=outcomes.append).request("GET", "/x", kind="read")
    assert resp.status == 200 and resp.json() == {}
    assert outcomes[0].ok and not outcomes[0].truncated
