"""gunicorn's gevent worker with a lame-duck period and a drain that does not wait for idle clients.

Stock gunicorn 27 (`gunicorn/workers/ggevent.py`): the master closes its copy of
the listeners and sends SIGTERM to every worker; a worker sets `alive = False`,
closes its listener within a second, then waits up to `graceful_timeout` while
*any* connection greenlet is alive, idle keep-alive connections included (they
sit in `next(parser)` for up to `keepalive` seconds), before killing them.
The master SIGKILLs whatever is left `graceful_timeout` after its SIGTERM.

This worker, on SIGTERM:
1. when the whole replica is stopping (the master was told to stop, see
   `replica_stopping`): marks the process draining (`service.runtime.lifecycle`):
   /healthz and /readyz answer 503, everything else is served as usual,
   keep-alive included, for `shutdown_delay` seconds, so the load balancer's
   health check takes the replica out while it still accepts connections. A
   worker replaced on its own (HUP reload, fewer workers) skips this: the
   replica stays in the pool and its other workers keep answering;
2. then stops accepting (closes its listener), answers every request that is
   still running with `Connection: close`, and closes keep-alive connections as
   soon as they are idle;
3. exits as soon as no connection is left, and at the latest 1.5 s before the
   master's SIGKILL deadline, when what is left is cut off (logged as a warning).

Fairness: before each request the worker yields once to the hub, so every
other connection with a request ready goes first (stock gunicorn serves a
keep-alive connection whose next request has already arrived again at once);
MAX_INFLIGHT optionally caps the requests handled at once, FIFO.

Each answer goes out through service/runtime/http1.py: a response of up to 64 KiB in one
write (a killed replica has sent all of it or nothing, which HAProxy can replay),
and a request body the app left unread drained, within bounds, before the close.
"""

from __future__ import annotations

import _socket
import contextlib
import socket
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import gevent
from gevent import select
from gevent.lock import BoundedSemaphore
from gevent.pool import Pool
from gevent.server import StreamServer
from gunicorn.http import wsgi
from gunicorn.http.wsgi import base_environ
from gunicorn.sock import ssl_context
from gunicorn.workers import ggevent

from service.runtime import http1, lifecycle

# Seconds kept between the worker's own forced stop and the master's SIGKILL.
STOP_MARGIN = 1.5
# How often (seconds) the drain loop closes newly idle connections and checks whether it is done.
DRAIN_TICK = 0.05


class GeventWorker(ggevent.GeventWorker):  # type: ignore[misc]  # gunicorn has no type hints
    # Seconds between SIGTERM and closing the listener; set by gunicorn.conf.py (SHUTDOWN_DELAY).
    shutdown_delay = 0.0
    # Requests one worker handles at once, 0 for no cap; set by gunicorn.conf.py (MAX_INFLIGHT).
    max_inflight = 0
    # Its semaphore, made in run(), after the fork and gevent's patching; None: no cap.
    _inflight: BoundedSemaphore | None = None

    @staticmethod
    def replica_stopping() -> bool:
        """Whether the master is stopping (replaced by gunicorn.conf.py); without it every SIGTERM is."""
        return True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._term_at: float | None = None
        self._delay = 0.0
        self._connections: set[Any] = set()
        # socket -> gunicorn Response of the request it is serving
        self._busy: dict[Any, Any] = {}

    # -- signals -----------------------------------------------------------------------------
    def handle_exit(self, sig: int, frame: Any) -> None:
        # SIGTERM. Stock gunicorn sets alive = False here (stop accepting within a
        # second); the lame-duck period keeps accepting, so only record the time.
        if self._term_at is None:
            self._term_at = time.monotonic()
            if self.replica_stopping():
                lifecycle.begin_draining()
                self._delay = self.shutdown_delay
            if self._delay <= 0:
                self.alive = False

    def _lame_duck_over(self) -> bool:
        return self._term_at is not None and time.monotonic() >= self._term_at + self._delay

    # -- connections -------------------------------------------------------------------------
    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = partial(self._track, self.wsgi)  # type: ignore[has-type]

    def _track(self, app: Callable[..., Iterable[bytes]], environ: dict[str, Any], start_response: Any) -> Any:
        # `start_response` is the gunicorn Response's bound method: keep the Response,
        # so a drain that starts while this request runs can still make it close.
        sock = environ.get("gunicorn.socket")
        if sock is not None:
            self._busy[sock] = getattr(start_response, "__self__", None)
        return app(environ, start_response)

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self._connections.add(client)
        try:
            super().handle(listener, client, addr)
        finally:
            self._connections.discard(client)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        """Serve one parsed request after the other connections' turn (see `_fair_turn`)."""
        self._busy.setdefault(sock, None)  # not idle while it waits its turn: the drain must not close it
        try:
            self._fair_turn()
            if self._inflight is None:
                return self._serve(listener_name, req, sock, addr)
            with self._inflight:
                return self._serve(listener_name, req, sock, addr)
        finally:
            self._busy.pop(sock, None)

    def _fair_turn(self) -> None:
        # gevent socket calls that succeed at once do not yield: with the stock worker a
        # keep-alive connection whose next request has already arrived is served again
        # and again while the others wait (tiny p50, p99 20-30x worse; see
        # bench/recorded/2026-11-29-fairness.md). One trip through the hub per request
        # lets every other ready connection go first.
        gevent.sleep(0)

    def _serve(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> bool:
        """gunicorn's AsyncWorker.handle_request (27.0.1) with two changes (service/runtime/http1.py): a response
        that fits leaves in one write, and a body the app left unread closes the connection after the
        answer, once drained within bounds; and no call of gunicorn's access log, which is off (the
        app writes its own access line, service.runtime.logs) but built its line anyway."""
        environ: dict[str, Any] = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            resp, environ = wsgi.create(req, sock, addr, listener_name, self.cfg, response_class=http1.Response)
            environ["wsgi.multithread"] = True
            self.nr += 1
            if self.nr >= self.max_requests and self.alive:
                self.log.info("Autorestarting worker after current request.")
                self.alive = False
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            respiter = self.wsgi(environ, resp.start_response)
            if self.is_already_handled(respiter):
                return False
            unread = http1.body_left_unread(req)
            if unread:
                resp.force_close()
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                if unread:
                    http1.drain_body(req, sock)
                raise StopIteration()
        except StopIteration:
            raise
        except OSError:
            raise  # handle() ignores resets and broken pipes
        except (Exception, SystemExit):
            if resp is not None and resp.headers_sent:
                # Part of the answer may be out: a 500 written now would corrupt it.
                self.log.exception("Error handling request")
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                    sock.close()
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
            self._busy.pop(sock, None)
        return True

    def _close_idle(self) -> None:
        """Close keep-alive connections that wait for a next request; make running ones close after theirs."""
        for resp in self._busy.values():
            if resp is not None and not resp.headers_sent:
                resp.force_close()
        for client in list(self._connections):
            if client in self._busy:
                continue
            try:
                readable, _, _ = select.select([client], [], [], 0)
                if readable:  # a request is arriving: let it be served (it will close after)
                    continue
                _shutdown(client)
            except (OSError, ValueError):
                pass
            self._connections.discard(client)

    # -- main loop ---------------------------------------------------------------------------
    def run(self) -> None:
        if self.max_inflight > 0:
            # The others wait their turn in arrival order: gevent's semaphore wakes waiters FIFO.
            self._inflight = BoundedSemaphore(self.max_inflight)
        servers = [self._start_server(s) for s in self.sockets]
        last_notify = 0.0
        while self.alive and not self._lame_duck_over():
            now = time.monotonic()
            if now - last_notify >= 1.0:
                self.notify()
                last_notify = now
            gevent.sleep(0.25 if self._term_at is None else 0.05)
        self.alive = False  # requests starting from now on answer with Connection: close

        # Budget: the master SIGKILLs graceful_timeout after its SIGTERM.
        start = self._term_at if self._term_at is not None else time.monotonic()
        deadline = start + max(self.cfg.graceful_timeout - STOP_MARGIN, 0.0)
        try:
            for server in servers:
                server.close()  # stop accepting
            while True:
                self._close_idle()
                if all(server.pool.free_count() == server.pool.size for server in servers):
                    return
                if time.monotonic() >= deadline:
                    break
                if time.monotonic() - last_notify >= 1.0:
                    self.notify()
                    last_notify = time.monotonic()
                gevent.sleep(DRAIN_TICK)
            self.log.warning("Worker graceful timeout (pid:%s)", self.pid)
            for server in servers:
                server.stop(timeout=1)
        except Exception:
            self.log.exception("Error while stopping the worker (pid:%s)", self.pid)

    def _start_server(self, sock: Any) -> StreamServer:
        """The same server the stock gevent worker starts (ggevent.GeventWorker.run)."""
        ssl_args = {"ssl_context": ssl_context(self.cfg)} if self.cfg.is_ssl else {}
        sock.setblocking(1)
        pool = Pool(self.worker_connections)
        server: StreamServer
        if self.server_class is not None:
            environ = base_environ(self.cfg)
            environ.update({"wsgi.multithread": True, "SERVER_SOFTWARE": ggevent.VERSION})
            server = self.server_class(
                sock,
                application=self.wsgi,
                spawn=pool,
                log=self.log,
                handler_class=self.wsgi_handler,
                environ=environ,
                **ssl_args,
            )
        else:
            server = StreamServer(sock, handle=partial(self.handle, sock), spawn=pool, **ssl_args)
            if self.cfg.workers > 1:
                server.max_accept = 1
        server.start()
        return server


def _shutdown(client: Any) -> None:
    """Shut the connection down under the greenlet blocked in recv() on it: it reads EOF and
    closes the socket quietly. (gevent's own socket.shutdown() would make that recv() raise
    "file descriptor closed in another greenlet", which gunicorn logs as an error.)"""
    raw = _socket.socket(fileno=client.fileno())
    try:
        raw.shutdown(_socket.SHUT_RDWR)
    finally:
        raw.detach()
