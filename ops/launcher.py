"""Start gunicorn with gunicorn.conf.py, wait until it answers /healthz, stop it.

The one launcher behind the tests' live servers (tests/live.py), the benchmark's servers
(bench/servers.py) and the cluster's replicas (ops/cluster.py). Each caller brings its own
environment (testing or production, its database, its cache prefix), an optional WSGI app spec
(the benchmark's ceiling serves bench.ceiling:app under the same config) and its log file.
Standard library only: it runs before anything else is installed in a fresh checkout.

Named `launcher`, not `gunicorn`, so a script run from ops/ can never shadow the gunicorn package.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "gunicorn.conf.py"
BIN = Path(sys.executable).parent


class LaunchError(RuntimeError):
    """gunicorn did not come up; the message names its log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def healthy(url: str, timeout: float = 1.0) -> bool:
    """Whether `url`/healthz answers 200."""
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=timeout) as resp:  # noqa: S310 - http to our server
            return bool(resp.status == 200)
    except OSError:
        return False


def environment(
    base: Mapping[str, str], port: int, host: str = "127.0.0.1", workers: int | None = None
) -> dict[str, str]:
    """`base` made to listen on host:port: HOST and PORT set, BIND dropped (it would win over them)."""
    env = {k: v for k, v in base.items() if k != "BIND"}
    env.update(HOST=host, PORT=str(port))
    if workers is not None:
        env["WEB_CONCURRENCY"] = str(workers)
    return env


def command(app: str | None = None, args: Sequence[str] = ()) -> list[str]:
    """gunicorn -c gunicorn.conf.py [args] [app]; without `app` the config's wsgi_app (the service)."""
    return [str(BIN / "gunicorn"), "-c", str(CONFIG), *args, *([app] if app else [])]


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_healthy(url: str, alive: Callable[[], bool], timeout: float, log_path: Path, label: str = "gunicorn") -> None:
    """Poll `url`/healthz until it answers 200; LaunchError if `alive()` turns False or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not healthy(url):
        if not alive():
            why = "exited before answering"
        elif time.monotonic() > deadline:
            why = f"did not answer within {timeout:.0f} s"
        else:
            time.sleep(0.1)
            continue
        raise LaunchError(
            f"{label} on {url} {why} /healthz; see {log_path}\n--- end of {log_path} ---\n{tail(log_path)}"
        )


@dataclass
class Gunicorn:
    """A gunicorn master started here: its process, base URL and log."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path
    label: str = "gunicorn"
    session: bool = False  # leads its own session: a stop reaches its workers as a group

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait_healthy(self, timeout: float = 60.0) -> None:
        wait_healthy(self.url, self.running, timeout, self.log_path, self.label)

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM (gunicorn's graceful stop), SIGKILL after `timeout`; True if it was graceful."""
        if self.proc.poll() is not None:
            return True
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            if self.session:
                with suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
            else:
                self.proc.kill()
            self.proc.wait()
            return False


def start(
    env: Mapping[str, str],
    port: int,
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    workers: int | None = None,
    app: str | None = None,
    args: Sequence[str] = (),
    label: str = "gunicorn",
    append: bool = False,
    new_session: bool = False,
) -> Gunicorn:
    """Start gunicorn on host:port with `env` (see `environment`), stdout and stderr to `log_path`.

    `append` keeps an existing log (a replica restarted in place); `new_session` makes the master
    lead its own session and process group, so a signal to the group reaches its workers too.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab" if append else "wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv built here, no shell
            command(app, args),
            env=environment(env, port, host, workers),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    return Gunicorn(proc, f"http://{host}:{port}", log_path, label, new_session)


@contextmanager
def serving(server: Gunicorn, timeout: float = 60.0, stop_timeout: float = 30.0) -> Iterator[Gunicorn]:
    """Wait until a just started `server` is healthy (at most `timeout` s), yield it, stop it, also on error."""
    try:
        server.wait_healthy(timeout)
        yield server
    finally:
        server.stop(stop_timeout)
