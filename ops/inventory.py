"""What a cluster's state directory holds, and the checks made before starting one.

`servers.cfg` (the replica inventory HAProxy loads after haproxy.cfg: names and ports are read back
from it, nowhere else) and `state.json` (pids with their start times, the replicas' environment; mode
600: it may hold SECRET_KEY); plus where haproxy is installed and whether a port is free.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ops import procs
from ops.lbadmin import Admin

ROOT = Path(__file__).resolve().parent.parent
BACKEND = "be_api"
SERVER_LINE = re.compile(r"^\s*server\s+(\S+)\s+(\S+):(\d+)(\s|$)")
Log = Callable[[str], None]


class ClusterError(RuntimeError):
    """The cluster cannot do what was asked; the message says why and where to look."""


def read_inventory(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (host, port) of every `server` line of a servers file."""
    servers = {}
    for line in path.read_text().splitlines():
        if match := SERVER_LINE.match(line.split("#", 1)[0]):
            servers[match[1]] = (match[2], int(match[3]))
    return servers


def write_inventory(path: Path, replicas: Mapping[str, int]) -> None:
    lines = [
        "# The replica inventory, written by `python -m ops.cluster start`; HAProxy loads it after haproxy.cfg.",
        "# Every setting comes from `defaults replicas` in haproxy.cfg. Several hosts: one line per replica,",
        "# `server <name> <host>:<port>` (see ops/haproxy/servers.example.cfg).",
        f"backend {BACKEND} from replicas",
        *(f"    server {name} 127.0.0.1:{port}" for name, port in replicas.items()),
    ]
    path.write_text("\n".join(lines) + "\n")


def haproxy_binary() -> str:
    candidates = (shutil.which("haproxy"), "/usr/sbin/haproxy", "/usr/local/sbin/haproxy")
    found = next((c for c in candidates if c and Path(c).exists()), None)
    if not found:
        raise ClusterError("haproxy is not installed: `make haproxy` (apt-get install -y haproxy)")
    return found


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class ClusterState:
    """A state directory: its files, the processes recorded there, and the HAProxy admin socket."""

    def __init__(self, state_dir: Path | str = ROOT / "var" / "cluster", log: Log = print) -> None:
        self.dir = Path(state_dir).resolve()
        self.inventory = self.dir / "servers.cfg"
        self.state_file = self.dir / "state.json"
        self.socket = self.dir / "haproxy.sock"
        self.log = log
        self.state: dict[str, Any] = {}
        self.reload()

    def reload(self) -> None:
        """Read state.json again: another invocation (a rolling restart) may have replaced processes."""
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def _save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.chmod(0o600)
        tmp.replace(self.state_file)

    def process(self, name: str) -> procs.Process | None:
        """The recorded process `name` (it may have exited since), or None."""
        record = self.state.get("processes", {}).get(name)
        return procs.Process(record["pid"], record["started"]) if record else None

    def _record(self, name: str, proc: procs.Process) -> None:
        self.state.setdefault("processes", {})[name] = {"pid": proc.pid, "started": proc.started}
        self._save()

    def replicas(self) -> dict[str, tuple[str, int]]:
        if not self.inventory.exists():
            raise ClusterError(f"no cluster in {self.dir} (no servers.cfg): start one with `make cluster`")
        return read_inventory(self.inventory)

    def admin(self) -> Admin:
        return Admin(self.socket)

    def running(self) -> list[str]:
        """Names of the recorded processes that still run (haproxy, app1, ...)."""
        self.reload()
        names = self.state.get("processes", {})
        return [name for name in names if (proc := self.process(name)) is not None and procs.owns_group(proc)]
