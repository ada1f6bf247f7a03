"""ops.procs: which directory keeps a process that runs as another user away from its files."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import pytest

from ops import procs


def test_the_first_directory_another_user_cannot_enter_is_named() -> None:
    other = next((u for u in pwd.getpwall() if u.pw_uid not in (0, os.geteuid()) and u.pw_gid != os.getegid()), None)
    if other is None:
        pytest.skip("no user other than this one on the machine")
    base = Path(tempfile.mkdtemp(dir="/tmp"))  # /tmp itself is open to all; pytest's tmp_path is not
    try:
        inner = base / "open" / "inner"
        inner.mkdir(parents=True)
        base.chmod(0o755)
        (base / "open").chmod(0o755)
        assert procs.closed_to(other, inner) is None
        (base / "open").chmod(0o700)  # as a `mktemp -d` directory is
        assert procs.closed_to(other, inner) == base / "open"
        with pytest.raises(PermissionError, match=r"cannot enter .*open"):
            procs.spawn(["true"], None, inner, base / "log", other)
    finally:
        shutil.rmtree(base)
