"""Throwaway PostgreSQL and Redis servers that fault tests may stop, crash and freeze.

Each runs on its own free port on 127.0.0.1 with its files in a temporary
folder, so injecting a fault never touches the machine's shared services.
PostgreSQL runs as the `postgres` OS user when the tests run as root (it
refuses to run as root), and keeps its durability defaults: fsync on and
`synchronous_commit=on`, which the "no acknowledged write is lost" check
depends on.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.live import free_port


def _postgres_bin() -> Path | None:
    """The PostgreSQL server binaries: PG_BIN, else the newest /usr/lib/postgresql/*/bin."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing_binaries() -> list[str]:
    """What a machine lacks to run the fault tests (empty when nothing)."""
    missing = []
    bin_dir = _postgres_bin()
    if bin_dir is None or not (bin_dir / "initdb").exists() or not (bin_dir / "pg_ctl").exists():
        missing.append("PostgreSQL server binaries (initdb, pg_ctl; apt-get install postgresql)")
    if shutil.which("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (util-linux), to run PostgreSQL as the postgres user")
    return missing


def wait_for_port(port: int, up: bool, seconds: float) -> float:
    """Wait until 127.0.0.1:`port` accepts (or refuses) TCP connections; the seconds it took."""
    started = time.monotonic()
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                accepting = True
        except OSError:
            accepting = False
        if accepting == up:
            return time.monotonic() - started
        if time.monotonic() - started > seconds:
            raise TimeoutError(f"port {port} still {'closed' if up else 'open'} after {seconds}s")
        time.sleep(0.01)


class ThrowawayPostgres:
    """An initdb'ed cluster in a temporary folder, started and stopped with pg_ctl."""

    def __init__(self, max_connections: int = 200) -> None:
        bin_dir = _postgres_bin()
        assert bin_dir is not None, missing_binaries()
        self.bin = bin_dir
        self.port = free_port()
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="conduit-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
            self.root.chmod(0o700)

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, timeout=timeout, capture_output=True, text=True)

    def init(self) -> None:
        # --no-sync only skips flushing initdb's own files; commits are still fsynced (fsync=on).
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        settings = {
            "port": str(self.port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.root}'",
            "synchronous_commit": "on",
            "fsync": "on",
            "max_connections": str(self.max_connections),
            "logging_collector": "off",
        }
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write("\n# conduit fault tests\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))

    def pg_ctl(self, *args: str, timeout: float = 60) -> None:
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), *args, check=False, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl {' '.join(args)} failed: {result.stdout}{result.stderr}\n{self.log_tail()}")

    def start(self) -> None:
        self.pg_ctl("start", "-w", "-t", "30")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("stop", "-w", "-t", "30", "-m", mode)

    def restart(self, mode: str = "fast") -> None:
        self.pg_ctl("restart", "-w", "-t", "30", "-m", mode)

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop the server if it runs and delete its files; safe to call after any failure."""
        try:
            if self.running():
                self._run("pg_ctl", "-D", str(self.data), "stop", "-m", "immediate", "-w", "-t", "30", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server with no persistence, killed or frozen by its own pid."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="conduit-faults-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.root), "--logfile", str(self.root / "redis.log")]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, up=True, seconds=10)

    def kill(self) -> None:
        """SIGKILL: the data and every generation counter are gone."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        wait_for_port(self.port, up=False, seconds=5)

    def freeze(self) -> None:
        """SIGSTOP: connections still open and queue, nothing is answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.frozen = False

    def destroy(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                if self.frozen:
                    self.thaw()
                self.proc.kill()
                self.proc.wait(timeout=10)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
