"""How the gunicorn worker (service/runtime/worker.py) writes an answer: the socket's writes, recorded in process.

A replica killed between two writes of one response has sent its head without its body, which
HAProxy can no longer replay; so a response up to http1.ONE_WRITE bytes must leave in one write.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask
from gunicorn import http
from gunicorn.config import Config
from gunicorn.glogging import Logger

from service.runtime import http1
from service.runtime.worker import GeventWorker
from tests.conftest import Api, build_app

ADDR = ("127.0.0.1", 40000)
BIG: dict[str, str] = {}  # the slug of an article whose body is past ONE_WRITE


class RecordingSocket:
    """The worker's end of a connection; every send, sendall and sendfile is recorded."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def send(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        return self.sock.send(data)

    def sendfile(self, file: Any, offset: int = 0, count: int | None = None) -> int:
        file.seek(offset)
        data = file.read(count)
        self.sendall(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    application = build_app(f"sqlite:///{Path(tmp_path_factory.mktemp('worker'))}/w.db")
    api = Api(application.test_client())
    token = api.register("writer")
    api.create_article(token, title="small")
    BIG["slug"] = api.create_article(token, title="big", body="b" * 90_000)["slug"]
    return application


@pytest.fixture
def worker(app: Flask) -> GeventWorker:
    """The worker's request path without a process around it: what handle() calls per request."""
    cfg = Config()
    w = GeventWorker.__new__(GeventWorker)
    w.cfg, w.log, w.alive, w.nr, w.max_requests = cfg, Logger(cfg), True, 0, 10**9
    w._busy, w._connections = {}, set()
    w.wsgi = partial(w._track, app.wsgi_app)
    return w


@pytest.fixture
def conn() -> Iterator[tuple[RecordingSocket, socket.socket]]:
    server, client = socket.socketpair()
    server.settimeout(5)
    client.settimeout(5)
    # Room for a whole answer, so a write never blocks on the peer in these tests.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    yield RecordingSocket(server), client
    server.close()
    client.close()


def serve(worker: GeventWorker, sock: RecordingSocket, client: socket.socket, request: bytes) -> list[bytes]:
    """Send `request`, let the worker answer it, return the writes it made."""
    client.sendall(request)
    req = next(http.get_parser(worker.cfg, sock, ADDR))
    worker.handle_request(ADDR, req, sock, ADDR)
    return sock.writes


def assert_one_whole_response(writes: list[bytes], status: bytes) -> None:
    assert len(writes) == 1, [w[:60] for w in writes]
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 " + status)
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    assert len(body) == length


@pytest.mark.parametrize(
    ("request_line", "status"),
    [
        (b"GET /api/tags", b"200"),
        (b"GET /api/articles?limit=1", b"200"),
        (b"GET /api/articles/no-such-article", b"404"),
        (b"GET /healthz", b"200"),
    ],
)
def test_a_response_that_fits_leaves_in_one_write_head_and_body(
    worker: GeventWorker, conn: tuple[RecordingSocket, socket.socket], request_line: bytes, status: bytes
) -> None:
    sock, client = conn
    writes = serve(worker, sock, client, request_line + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_one_whole_response(writes, status)


def test_a_write_with_its_body_read_first_also_leaves_in_one_write(
    worker: GeventWorker, conn: tuple[RecordingSocket, socket.socket]
) -> None:
    sock, client = conn
    body = b'{"user":{"email":"nobody@example.com","password":"wrong password"}}'
    head = b"POST /api/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    writes = serve(worker, sock, client, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
    assert_one_whole_response(writes, b"4")


def test_a_head_request_leaves_in_one_write(worker: GeventWorker, conn: tuple[RecordingSocket, socket.socket]) -> None:
    sock, client = conn
    writes = serve(worker, sock, client, b"HEAD /api/tags HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(writes) == 1 and writes[0].endswith(b"\r\n\r\n") and writes[0].startswith(b"HTTP/1.1 200")


def test_a_static_file_is_sent_head_first_then_the_file(
    worker: GeventWorker, conn: tuple[RecordingSocket, socket.socket]
) -> None:
    sock, client = conn
    writes = serve(worker, sock, client, b"GET /api/docs/static/swagger-ui/NOTICE HTTP/1.1\r\nHost: x\r\n\r\n")
    notice = (Path(__file__).parents[2] / "service/api/static/swagger-ui/NOTICE").read_bytes()
    assert writes[0].startswith(b"HTTP/1.1 200") and writes[0].endswith(b"\r\n\r\n")
    assert b"".join(writes[1:]) == notice


def test_a_response_over_the_one_write_size_is_streamed_as_gunicorn_does(
    worker: GeventWorker, conn: tuple[RecordingSocket, socket.socket]
) -> None:
    sock, client = conn
    writes = serve(worker, sock, client, b"GET /api/articles/%s HTTP/1.1\r\nHost: x\r\n\r\n" % BIG["slug"].encode())
    assert len(b"".join(writes)) > http1.ONE_WRITE
    assert len(writes) >= 2  # head, then the body: not held in memory beyond ONE_WRITE


def test_a_request_that_has_arrived_waits_for_the_other_ready_greenlets_first(
    worker: GeventWorker, conn: tuple[RecordingSocket, socket.socket]
) -> None:
    # gevent socket calls that succeed at once do not yield: without a turn per request a
    # keep-alive connection with its next request waiting would keep the worker to itself.
    order: list[str] = []
    app = worker.wsgi

    def recording(environ: dict[str, Any], start_response: Any) -> Any:
        order.append("request")
        return app(environ, start_response)

    worker.wsgi = recording
    gevent.spawn(order.append, "another connection")
    sock, client = conn
    serve(worker, sock, client, b"GET /api/tags HTTP/1.1\r\nHost: x\r\n\r\n")
    assert order == ["another connection", "request"]
