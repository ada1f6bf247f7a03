"""HAProxy's admin socket: read `show stat` / `show servers state`, set a server's admin state.

The runtime API is documented in the management guide shipped with HAProxy (section 9.3,
/usr/share/doc/haproxy/management.txt.gz); one command per connection, the answer ends at EOF.
"""

from __future__ import annotations

import csv
import io
import socket
from dataclasses import dataclass
from pathlib import Path

# srv_op_state in `show servers state`: 0 stopped, 1 starting (up, throttled by slowstart),
# 2 running, 3 stopping (up but soft-stopped).
UP_STATES = (1, 2)
# srv_admin_state bits: forced maintenance, forced drain.
ADMIN_MAINT = 0x01
ADMIN_DRAIN = 0x08


class AdminError(RuntimeError):
    """HAProxy refused a command or the socket is unreachable."""


@dataclass(frozen=True)
class ServerState:
    name: str
    address: str
    op_state: int
    admin_state: int

    @property
    def up(self) -> bool:
        return self.op_state in UP_STATES

    @property
    def ready(self) -> bool:
        """Up and taking new requests (neither drained nor in maintenance)."""
        return self.up and not self.admin_state & (ADMIN_MAINT | ADMIN_DRAIN)


class Admin:
    def __init__(self, path: Path | str, timeout: float = 5.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def command(self, line: str) -> str:
        """Send one command; return HAProxy's whole answer."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(line.encode() + b"\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise AdminError(f"HAProxy admin socket {self.path}: {exc}") from exc
        return b"".join(chunks).decode()

    def stats(self, backend: str) -> dict[str, dict[str, str]]:
        """`show stat` rows of `backend`, by server name (BACKEND is the backend's own row)."""
        text = self.command("show stat").lstrip("# ")
        return {row["svname"]: row for row in csv.DictReader(io.StringIO(text)) if row.get("pxname") == backend}

    def servers(self, backend: str) -> dict[str, ServerState]:
        """`show servers state` of `backend`, by server name."""
        states = {}
        for line in self.command(f"show servers state {backend}").splitlines()[1:]:
            fields = line.split()
            if len(fields) > 6 and not line.startswith("#"):
                states[fields[3]] = ServerState(fields[3], fields[4], int(fields[5]), int(fields[6]))
        return states

    def set_state(self, backend: str, server: str, state: str) -> None:
        """`state` is ready, drain or maint."""
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise AdminError(f"set server {backend}/{server} state {state}: {answer}")
