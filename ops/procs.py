"""Processes started in their own session, so a signal to the group reaches a master and its workers.

A recorded process is identified by its pid *and* its start time (from /proc), so a stop after a
reboot or a pid reuse never signals someone else's process. Linux only (/proc); a zombie counts as
gone (a container's init may never reap it).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Popen objects of the processes this interpreter started, so they are reaped (no zombies, no
# ResourceWarning) when a long-lived caller such as a test session checks on them.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Process:
    pid: int  # also its process group id: every process started here leads its own session
    started: int  # start time in clock ticks since boot (/proc/<pid>/stat field 22)


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time) of `pid`, or None when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # the command name may contain spaces
    return fields[0], int(fields[2]), int(fields[19])


def spawn(
    argv: Sequence[str], env: Mapping[str, str] | None, cwd: Path, log: Path, user: pwd.struct_passwd | None = None
) -> Process:
    """Start `argv` in a new session with stdout and stderr appended to `log`; as `user` when given
    (PostgreSQL and PgBouncer refuse to run as root). `env` None: this process's environment."""
    log.parent.mkdir(parents=True, exist_ok=True)
    if user is not None:
        closed = closed_to(user, Path(cwd))
        if closed is not None:
            raise PermissionError(
                f"{Path(argv[0]).name} runs as {user.pw_name}, who cannot enter {closed} (mode "
                f"{closed.stat().st_mode & 0o777:o}) and so cannot read its files in {cwd}: this happens with a "
                f"checkout under a private directory such as one made by `mktemp -d`; clone the project where "
                f"other users can pass, or `chmod o+x {closed}`"
            )
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv from this package, no shell
            list(argv),
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )
    return adopt(proc)


def closed_to(user: pwd.struct_passwd, path: Path) -> Path | None:
    """The first directory from / down to `path` that `user` may not enter (no search permission), or None."""
    for folder in [*reversed(path.resolve().parents), path.resolve()]:
        info = folder.stat()
        if info.st_uid == user.pw_uid:
            bit = 0o100
        elif info.st_gid == user.pw_gid:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return folder
    return None


def adopt(proc: subprocess.Popen[bytes]) -> Process:
    """The record of a child started elsewhere (ops.launcher) in its own session; it is reaped here."""
    _children[proc.pid] = proc
    stat = _stat(proc.pid)
    return Process(proc.pid, stat[2] if stat else 0)


def running(proc: Process) -> bool:
    """Whether the recorded process itself still runs (not a zombie, not a reused pid)."""
    child = _children.get(proc.pid)
    if child is not None and child.poll() is not None:
        del _children[proc.pid]
    stat = _stat(proc.pid)
    return stat is not None and stat[0] != "Z" and stat[2] == proc.started


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pgid and stat[0] != "Z":
                members.append(int(entry))
    return members


def owns_group(proc: Process) -> bool:
    """True when the group led by `proc` has live members and is still the one we started.

    If the leader is gone, its pid cannot have been reused while members of its group live."""
    stat = _stat(proc.pid)
    if stat is not None and stat[0] != "Z" and stat[2] != proc.started:
        return False  # the pid now belongs to another process
    return bool(group_members(proc.pid))


def signal_group(proc: Process, sig: int) -> bool:
    """Send `sig` to the whole process group of `proc`; False when nothing of it was left."""
    if not owns_group(proc):
        return False
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_leader(proc: Process, sig: int) -> bool:
    if not running(proc):
        return False
    os.kill(proc.pid, sig)
    return True


def wait_gone(proc: Process, timeout: float) -> bool:
    """Wait until no process of the group is left; True if that happened within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        running(proc)  # reaps our own child
        if not group_members(proc.pid):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop(proc: Process, timeout: float, sig: int = signal.SIGTERM) -> bool:
    """`sig` to the leader (graceful), SIGKILL to the whole group after `timeout`; True if it was graceful."""
    if not owns_group(proc):
        return True
    if not signal_leader(proc, sig):
        signal_group(proc, sig)  # leader gone: its orphaned workers get the signal themselves
    return finish(proc, timeout)


def finish(proc: Process, timeout: float) -> bool:
    """Wait up to `timeout` for a group already signalled, then SIGKILL what is left; True if none was."""
    if wait_gone(proc, timeout):
        return True
    signal_group(proc, signal.SIGKILL)
    wait_gone(proc, 5)
    return False
