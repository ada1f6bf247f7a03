"""A throwaway streaming standby of the cluster's primary: checked, base-backed-up, run, removed.

`pg_basebackup -R -X stream -c fast` copies the primary into `folder`/data and writes
`primary_conninfo` (standby.signal), so the copy starts as a hot standby that streams the primary's
WAL from then on. Its own postgresql.conf replaces the copied one (a Debian primary keeps its
configuration under /etc; a copied one would carry the primary's port): the port given here,
127.0.0.1 only, the settings a hot standby must hold at least at the primary's values, and
hot_standby_feedback with a short max_standby_streaming_delay (docs/operations.md, "Read replicas").

PostgreSQL refuses to run as root; started by root, every step runs as the `postgres` OS user,
which owns `folder`. `postgres` runs in the foreground in its own session (its backends are its
children), so the cluster records, stops and kills it like its other processes.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg2
from psycopg2.extras import PhysicalReplicationConnection
from sqlalchemy.engine import make_url

from ops import procs

RUN_AS_WHEN_ROOT = "postgres"
# A hot standby refuses to start with any of these below the primary's value.
AT_LEAST_PRIMARY = (
    "max_connections",
    "max_worker_processes",
    "max_wal_senders",
    "max_prepared_transactions",
    "max_locks_per_transaction",
)


class StandbyError(RuntimeError):
    """The standby cannot be created or started; the message says what to change or where to look."""


def server_bin() -> Path:
    """PostgreSQL's server binaries: PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_basebackup"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise StandbyError("pg_basebackup and postgres are not installed: apt-get install -y postgresql (or PG_BIN)")
    return Path(found[-1]).parent


def _dsn(url: str, **extra: str) -> str:
    """A libpq connection string for the server and user of `url` (psycopg2 and pg_basebackup take it)."""
    parsed = make_url(url)
    parts = {
        "host": parsed.host or "127.0.0.1",
        "port": str(parsed.port or 5432),
        "user": parsed.username or "postgres",
        "dbname": parsed.database or "postgres",
        "password": parsed.password or "",
        "connect_timeout": "5",
        **extra,
    }
    return " ".join(f"{k}='{v}'" for k, v in parts.items() if v)


def check_primary(url: str) -> dict[str, str]:
    """The primary's settings a standby must match; StandbyError naming what to change if it cannot serve one."""
    where = f"{make_url(url).host or '127.0.0.1'}:{make_url(url).port or 5432}"
    try:
        with psycopg2.connect(_dsn(url)) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('wal_level'), current_setting('max_wal_senders')::int,"
                " (SELECT count(*) FROM pg_stat_replication), current_setting('hba_file'),"
                " (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)"
            )
            wal_level, senders, used, hba_file, may_replicate = cur.fetchone()
            cur.execute("SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(AT_LEAST_PRIMARY),))
            settings = dict(cur.fetchall())
        conn.close()
    except psycopg2.Error as exc:
        raise StandbyError(f"PostgreSQL at {where}: {exc}".strip()) from exc
    user = make_url(url).username or "postgres"
    if wal_level not in ("replica", "logical"):
        raise StandbyError(
            f"the primary at {where} has wal_level = {wal_level}: set wal_level = replica in its postgresql.conf "
            "and restart it"
        )
    if senders - used < 1:
        raise StandbyError(
            f"the primary at {where} has no free WAL sender (max_wal_senders = {senders}, {used} in use): "
            "raise max_wal_senders in its postgresql.conf and restart it"
        )
    if not may_replicate:
        raise StandbyError(f"role {user} may not replicate: ALTER ROLE {user} REPLICATION on the primary at {where}")
    try:
        psycopg2.connect(_dsn(url), connection_factory=PhysicalReplicationConnection).close()
    except psycopg2.Error as exc:
        method = "scram-sha-256" if make_url(url).password else "trust"
        raise StandbyError(
            f"the primary at {where} refuses replication connections ({str(exc).strip()}): add a line such as"
            f" `host replication {user} 127.0.0.1/32 {method}` to {hba_file} (the `all` database does not"
            " match replication connections), then reload it (SELECT pg_reload_conf())"
        ) from exc
    return settings


def render_conf(port: int, folder: Path, primary: dict[str, str]) -> str:
    """The standby's postgresql.conf."""
    lines = [
        "# written by ops/standby.py: a throwaway hot standby of the cluster's primary",
        f"port = {port}",
        "listen_addresses = '127.0.0.1'",
        f"unix_socket_directories = '{folder}'",
        "hot_standby = on",
        "hot_standby_feedback = on",
        "max_standby_streaming_delay = 5s",
        "shared_buffers = 32MB",
        "logging_collector = off",
        *(f"{name} = {value}" for name, value in sorted(primary.items())),
    ]
    return "\n".join(lines) + "\n"


def render_hba(password: bool) -> str:
    """Loopback only; with a password the standby asks for the one replicated from the primary."""
    method = "scram-sha-256" if password else "trust"
    return f"# written by ops/standby.py\nlocal all all peer\nhost all all 127.0.0.1/32 {method}\n"


class Standby:
    """One streaming standby of `primary_url` with its files in `folder` (data/, standby.log)."""

    def __init__(self, folder: Path, primary_url: str, port: int) -> None:
        self.folder = Path(folder)
        self.primary_url = primary_url
        self.port = port
        self.data = self.folder / "data"
        self.log = self.folder / "standby.log"
        self.user = pwd.getpwnam(RUN_AS_WHEN_ROOT) if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        """The primary's URL (same database, user and password) with the standby's address."""
        return make_url(self.primary_url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", RUN_AS_WHEN_ROOT, "--", *argv] if self.user else argv

    def create(self, timeout: float = 300.0) -> None:
        """Check the primary, then base-backup it into `folder`/data and write the standby's configuration."""
        settings = check_primary(self.primary_url)
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        self.folder.chmod(0o700)
        if self.user:
            shutil.chown(self.folder, RUN_AS_WHEN_ROOT, RUN_AS_WHEN_ROOT)
        argv = [str(server_bin() / "pg_basebackup"), "-R", "-X", "stream", "-c", "fast", "-D", str(self.data)]
        argv += ["-d", _dsn(self.primary_url, dbname="", password="")]  # the password in the environment, not ps
        env = {**os.environ, "PGPASSWORD": make_url(self.primary_url).password or ""}
        out = subprocess.run(  # noqa: S603 - fixed argv
            self._as_owner(argv), env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if out.returncode != 0:
            hint = ""
            if self.user and "Permission denied" in out.stderr:
                hint = f"\nthe {RUN_AS_WHEN_ROOT} OS user must reach {self.folder}: each parent directory needs o+x"
            raise StandbyError(f"pg_basebackup failed:\n{out.stdout}{out.stderr}{hint}")
        (self.data / "postgresql.conf").write_text(render_conf(self.port, self.folder, settings))
        (self.data / "pg_hba.conf").write_text(render_hba(bool(make_url(self.primary_url).password)))
        (self.data / "pg_ident.conf").write_text("")
        if self.user:
            for path in (self.data / "postgresql.conf", self.data / "pg_hba.conf", self.data / "pg_ident.conf"):
                shutil.chown(path, RUN_AS_WHEN_ROOT, RUN_AS_WHEN_ROOT)

    def start(self, timeout: float = 60.0) -> procs.Process:
        """Run `postgres` in the foreground (log: `folder`/standby.log); wait until it accepts reads."""
        argv = [str(server_bin() / "postgres"), "-D", str(self.data)]
        proc = procs.spawn(argv, None, self.folder, self.log, self.user)
        if self.user:
            shutil.chown(self.log, RUN_AS_WHEN_ROOT, RUN_AS_WHEN_ROOT)
        deadline = time.monotonic() + timeout
        while not self.in_recovery():
            if not procs.running(proc) or time.monotonic() > deadline:
                tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-10:])
                raise StandbyError(f"the standby did not accept reads on port {self.port}; {self.log}:\n{tail}")
            time.sleep(0.1)
        return proc

    def in_recovery(self) -> bool:
        try:
            with psycopg2.connect(_dsn(self.url, connect_timeout="1")) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_is_in_recovery()")
                (recovering,) = cur.fetchone()
            conn.close()
        except psycopg2.Error:
            return False
        return bool(recovering)


def stop(proc: procs.Process, timeout: float = 30.0) -> bool:
    """Fast shutdown (SIGINT: clients disconnected, no wait for them); SIGKILL after `timeout`."""
    return procs.stop(proc, timeout, signal.SIGINT)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
