"""How the worker puts an answer on an HTTP/1.x connection: whole or not at all, and readable by a
client that is still sending its body.

One write. gunicorn sends a response's head, then each body chunk, with separate send() calls. A
replica killed between them has sent a head without its body: HAProxy has already forwarded the head,
can no longer replay the request elsewhere, and the client reads a cut body (`IncompleteRead`). A
response of known length up to ONE_WRITE bytes is held here and leaves in one sendall, head and body:
a replica that dies has sent all of it or nothing, and nothing is an empty response that HAProxy
replays where that is safe (haproxy.cfg, `retry-on empty-response`). Larger or streamed responses go
out as gunicorn sends them.

Draining before close. A request whose body the app left unread (a 413 over MAX_CONTENT_LENGTH, a 401
before the body was parsed) is answered with `Connection: close`, unless what is left is small enough
for gunicorn to skip before the next request. Closing a socket that still has unread data makes the
kernel send a reset, and a client still sending its body would lose the answer with it. So after the
answer the worker reads the rest of the body through gunicorn's reader (chunked framing included) and
throws it away, for at most DRAIN_SECONDS (DRAIN_IDLE of silence ends it sooner) and DRAIN_BYTES,
then closes. Only a bounded piece is in memory at a time. The sending side stays open until the body
has ended: HAProxy 2.6 does not drain a request whose server has shut the connection down before the
end of it (haproxy/haproxy#2404), so a shutdown first would bring the reset back through the proxy.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.body import ChunkedReader, LengthReader


@functools.lru_cache(maxsize=2)
def _date_line(second: int) -> str:
    return f"Date: {util.http_date(second)}\r\n"


# Largest response body (bytes) held to leave in one write with its head (about 0.5 KB). 64 KiB: a
# fresh TCP connection's send buffer on Linux (87,040 bytes on a 1,500-byte MTU link, more on
# loopback) takes it in one send(), so the one write is one system call the kernel accepts whole;
# API answers are far smaller (a page of articles about 3 KB, a write 0.3-1 KB); and it bounds what
# is copied per response in flight.
ONE_WRITE = 64 * 1024
# Unread body bytes gunicorn may skip before the next request on a kept-alive connection (its own
# bound for such a drain, gunicorn.http.parser._DRAIN_MAX_BYTES). Beyond it the connection closes.
KEEP_ALIVE_SKIP = 64 * 1024
# Draining an unread body before closing: total seconds, seconds of silence, bytes read and thrown away.
DRAIN_SECONDS = 10.0
DRAIN_IDLE = 2.0
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_STEP = 64 * 1024


class Response(wsgi.Response):  # type: ignore[misc]  # gunicorn has no type hints
    """gunicorn's HTTP/1.x response; one that fits in ONE_WRITE bytes leaves in a single sendall."""

    headers_sent: bool

    def __init__(self, req: Any, sock: Any, cfg: Any) -> None:
        super().__init__(req, sock, cfg)
        self._held: list[bytes] | None = None
        self._from_file = False

    def _fits(self) -> bool:
        if self.chunked or self.upgrade or self._from_file:
            return False
        if self._omits_body:  # HEAD, 204, 304: the head is everything
            return True
        return self.response_length is not None and self.response_length <= ONE_WRITE

    def default_headers(self) -> list[str]:
        """gunicorn's (wsgi.Response.default_headers, 27.0.1), with the Date line made once a second."""
        if self.upgrade:
            connection = "upgrade"
        elif self.should_close():
            connection = "close"
        else:
            connection = "keep-alive"
        headers = [
            f"HTTP/{self.req.version[0]}.{self.req.version[1]} {self.status}\r\n",
            f"Server: {self.version}\r\n",
            _date_line(int(time.time())),
            f"Connection: {connection}\r\n",
        ]
        if self.chunked:
            headers.append("Transfer-Encoding: chunked\r\n")
        return headers

    def send_headers(self) -> None:
        if self.headers_sent or not self._fits():
            super().send_headers()
            return
        # The head as gunicorn builds it (wsgi.Response.send_headers), held instead of sent.
        lines = [*self.default_headers(), *(f"{name}: {value}\r\n" for name, value in self.headers)]
        self._held = [("".join(lines) + "\r\n").encode("latin-1")]
        self.headers_sent = True  # committed: the head can no longer change

    def _emit_body(self, data: bytes) -> None:
        if self._held is None:
            super()._emit_body(data)
            return
        self._held.append(data)
        if self.sent >= self.response_length:
            self._flush()

    def sendfile(self, respiter: Any) -> bool:
        # A file (a static asset) is written by the kernel with sendfile(), after the head: not held.
        self._from_file = True
        return bool(super().sendfile(respiter))

    def close(self) -> None:
        super().close()
        self._flush()

    def _flush(self) -> None:
        if self._held is not None:
            data, self._held = b"".join(self._held), None
            util.write(self.sock, data)


def body_left_unread(req: Any) -> bool:
    """Whether the app left more of the request body unread than gunicorn should skip to keep the
    connection (a chunked body of unknown rest counts as more)."""
    body = getattr(req, "body", None)
    if body is None:
        return False
    reader = body.reader
    if isinstance(reader, LengthReader):
        return bool(reader.length > KEEP_ALIVE_SKIP)
    if isinstance(reader, ChunkedReader):
        return reader.parser is not None
    return False


def drain_body(req: Any, sock: Any) -> bool:
    """Read and discard the rest of the request body within the bounds above. True when it ended, so the
    socket closes with nothing unread (a FIN, not a reset); False when a bound or an error stopped it."""
    deadline = time.monotonic() + DRAIN_SECONDS
    discarded = 0
    try:
        while discarded < DRAIN_BYTES:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(min(left, DRAIN_IDLE))
            data = req.body.read(DRAIN_STEP)
            if not data:
                return True
            discarded += len(data)
    except Exception:  # a timeout, a reset, a malformed chunk: stop here
        return False
    return False
