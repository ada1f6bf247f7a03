"""Whether this process is shutting down ("draining").

The gunicorn worker (`service.runtime.worker`) calls `begin_draining()` when it receives
SIGTERM; `/healthz` and `/readyz` answer 503 from then on, so a load balancer
takes the replica out while it still serves (the lame-duck period,
SHUTDOWN_DELAY). The state is per process, like the signal that sets it.
"""

from __future__ import annotations

import time

_draining_since: float | None = None


def begin_draining() -> None:
    """Mark this process as shutting down. Safe to call from a signal handler; idempotent."""
    global _draining_since
    if _draining_since is None:
        _draining_since = time.monotonic()


def is_draining() -> bool:
    return _draining_since is not None


def reset() -> None:
    """Back to serving (tests only: a real process never comes back from draining)."""
    global _draining_since
    _draining_since = None
