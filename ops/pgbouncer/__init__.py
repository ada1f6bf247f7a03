"""PgBouncer in transaction pooling mode between the replicas and PostgreSQL: its ini and its process.

The replicas connect to PgBouncer (their DATABASE_URL); PgBouncer opens at most `pool_size` server
connections to PostgreSQL, however many replicas x workers x pooled connections there are, and lends
one to a client for the length of a transaction. Migrations bypass it (DATABASE_DIRECT_URL).

PgBouncer refuses to run as root; started by root it runs as the `postgres` user (as the Debian
package's unit does), its files owned by that user. docs/operations.md ("PgBouncer") says which of
these settings must agree with the service's.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from ops import procs

RUN_AS_WHEN_ROOT = "postgres"


class PgBouncerError(RuntimeError):
    """PgBouncer cannot be started; the message says why and where to look."""


@dataclass(frozen=True)
class PoolSettings:
    # Server connections per database/user pair, and at most per database: what PostgreSQL sees.
    pool_size: int = 40
    # Client connections accepted: >= replicas x workers x (DB_POOL_SIZE + DB_WRITE_POOL_SIZE + 2 x DB_MAX_OVERFLOW).
    max_client_conn: int = 1000
    # Seconds a client's query may wait for a server connection before PgBouncer drops the client;
    # above DB_POOL_TIMEOUT (2 s): the service's own pool gives up first and answers 503.
    query_wait_timeout: int = 5
    # Seconds to connect and log in to PostgreSQL (like DB_CONNECT_TIMEOUT, on PgBouncer's side).
    server_connect_timeout: int = 2
    # Seconds PgBouncer refuses new server logins after one failed (default 15): short, so a
    # restarted PostgreSQL is used again within about a second.
    server_login_retry: int = 1
    # Server connections idle this long are closed (seconds); the service's DB_PING_AFTER is far shorter.
    server_idle_timeout: int = 600


def binary() -> str:
    candidates = (shutil.which("pgbouncer"), "/usr/sbin/pgbouncer")
    found = next((c for c in candidates if c and Path(c).exists()), None)
    if not found:
        raise PgBouncerError("pgbouncer is not installed: `make pgbouncer` (apt-get install -y pgbouncer)")
    return found


def _target(server_url: str) -> str:
    url = make_url(server_url)
    return f"host={url.host or '127.0.0.1'} port={url.port or 5432} dbname={url.database}"


def render(
    server_url: str, port: int, folder: Path, pool: PoolSettings, standbys: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """(pgbouncer.ini, userlist.txt) for one database of `server_url`, served on 127.0.0.1:`port`.

    `standbys` maps a further database name (what clients ask for) to a standby's URL: each is a
    database entry of its own, with its own pool of `pool_size` server connections.
    In the ini `;` starts a comment only at the start of a line: no trailing comments."""
    url = make_url(server_url)
    user, password = url.username or "postgres", url.password or ""
    entries = "".join(f"{alias} = {_target(standby)}\n" for alias, standby in (standbys or {}).items())
    ini = f"""\
; written by ops/pgbouncer/__init__.py
[databases]
{url.database} = {_target(server_url)}
{entries}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
; trust without a password (loopback); with one, clients prove it with SCRAM and PgBouncer logs in with it
auth_type = {"scram-sha-256" if password else "trust"}
auth_file = {folder / "userlist.txt"}
admin_users = {user}
stats_users = {user}
pool_mode = transaction
default_pool_size = {pool.pool_size}
max_db_connections = {pool.pool_size}
max_client_conn = {pool.max_client_conn}
; never run in transaction mode, and the service leaves no session state to reset
server_reset_query =
query_wait_timeout = {pool.query_wait_timeout}
server_connect_timeout = {pool.server_connect_timeout}
server_login_retry = {pool.server_login_retry}
server_idle_timeout = {pool.server_idle_timeout}
; the service sends application_name only; any other startup parameter is refused, never ignored
ignore_startup_parameters =
"""
    return ini, f'"{user}" "{password}"\n'


def client_url(server_url: str, port: int) -> str:
    """`server_url` with PgBouncer's address in place of PostgreSQL's."""
    return make_url(server_url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class PgBouncer:
    """One PgBouncer process with its files in `folder`; started, stopped and restarted by its own pid."""

    def __init__(
        self,
        folder: Path,
        server_url: str,
        port: int,
        pool: PoolSettings | None = None,
        standbys: Mapping[str, str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.standbys = dict(standbys or {})
        self.server_url = server_url
        self.port = port
        self.pool = pool or PoolSettings()
        self.ini = self.folder / "pgbouncer.ini"
        self.log = self.folder / "pgbouncer.log"
        self.proc: procs.Process | None = None

    @property
    def url(self) -> str:
        """The DATABASE_URL of a client of this PgBouncer."""
        return client_url(self.server_url, self.port)

    def standby_url(self, alias: str) -> str:
        """The URL a client uses to read from the standby served as database `alias`."""
        return make_url(self.url).set(database=alias).render_as_string(hide_password=False)

    def write_config(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        ini, users = render(self.server_url, self.port, self.folder, self.pool, self.standbys)
        self.ini.write_text(ini)
        (self.folder / "userlist.txt").write_text(users)
        (self.folder / "userlist.txt").chmod(0o600)
        if os.geteuid() == 0:
            for path in (self.folder, self.ini, self.folder / "userlist.txt"):
                shutil.chown(path, RUN_AS_WHEN_ROOT, RUN_AS_WHEN_ROOT)

    def start(self, timeout: float = 10.0) -> procs.Process:
        """Write the config, start PgBouncer in the foreground (log: `folder`/pgbouncer.log), wait for its port."""
        self.write_config()
        argv = [binary(), str(self.ini)]
        user = pwd.getpwnam(RUN_AS_WHEN_ROOT) if os.geteuid() == 0 else None
        self.proc = procs.spawn(argv, None, self.folder, self.log, user)
        deadline = time.monotonic() + timeout
        while not port_accepts(self.port):
            if not procs.running(self.proc) or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
                raise PgBouncerError(f"PgBouncer did not listen on port {self.port}; {self.log}:\n{tail}")
            time.sleep(0.02)
        return self.proc

    def stop(self, timeout: float = 10.0) -> None:
        """Immediate shutdown (SIGTERM): every client connection is closed at once."""
        if self.proc is not None:
            procs.stop(self.proc, timeout, signal.SIGTERM)
            self.proc = None
        deadline = time.monotonic() + timeout
        while port_accepts(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)
