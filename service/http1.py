"""How the worker ends an HTTP/1.x exchange whose request body the app did not read.

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

import time
from typing import Any

from gunicorn.http.body import ChunkedReader, LengthReader

# Unread body bytes gunicorn may skip before the next request on a kept-alive connection (its own
# bound for such a drain, gunicorn.http.parser._DRAIN_MAX_BYTES). Beyond it the connection closes.
KEEP_ALIVE_SKIP = 64 * 1024
# Draining an unread body before closing: total seconds, seconds of silence, bytes read and thrown away.
DRAIN_SECONDS = 10.0
DRAIN_IDLE = 2.0
DRAIN_BYTES = 64 * 1024 * 1024
DRAIN_STEP = 64 * 1024


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
