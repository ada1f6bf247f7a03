"""The unit layer needs nothing: no database, no Redis, and no processes (no apt-get, no wrk, no gunicorn)."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test that starts a process fails: such a test belongs to another layer."""

    def refuse(self: Any, args: Any, *_args: Any, **_kwargs: Any) -> None:
        raise AssertionError(f"a unit test started a process: {args!r}; move the test to another layer")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
