"""Cooperative psycopg2 under gevent, with a connect timeout that works.

psycogreen's callback makes libpq yield to the gevent hub, but in that async
mode libpq ignores `connect_timeout`: a database that accepts TCP and never
answers would hang a request forever. This callback is the same loop with a
deadline applied only while connecting; queries are bounded server-side by
`statement_timeout`, never by killing a greenlet mid-query (which can corrupt
the connection).
"""

from __future__ import annotations

import psycopg2
from gevent.socket import wait_read, wait_write
from psycopg2 import extensions

_CONNECTED = frozenset({extensions.STATUS_READY, extensions.STATUS_BEGIN, extensions.STATUS_PREPARED})


def install(connect_timeout: float) -> None:
    """Make every psycopg2 connection in this process yield to the gevent hub.

    Process-global: call it once per worker, after gunicorn has forked.
    """

    def wait(conn: extensions.connection, timeout: float | None = None) -> None:
        limit = None if conn.status in _CONNECTED else connect_timeout
        error = psycopg2.OperationalError(f"timed out after {limit}s connecting to the database")
        while True:
            state = conn.poll()
            if state == extensions.POLL_OK:
                return
            if state == extensions.POLL_READ:
                wait_read(conn.fileno(), timeout=limit, timeout_exc=error)
            elif state == extensions.POLL_WRITE:
                wait_write(conn.fileno(), timeout=limit, timeout_exc=error)
            else:
                raise psycopg2.OperationalError(f"bad result from poll: {state!r}")

    extensions.set_wait_callback(wait)


def uninstall() -> None:
    extensions.set_wait_callback(None)
