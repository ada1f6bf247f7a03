"""HAProxy in front of the benchmark's service (`bench/run.py --haproxy`): the path production takes.

The project's own haproxy.cfg with a one-replica inventory (ops/inventory.py), as `make cluster` runs
it, but for its per-client rate limit (the load generator is one client) and its sockets, which go to
the results directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from bench.common import BenchError, log
from ops.inventory import ROOT, haproxy_binary, write_inventory
from ops.launcher import free_port, healthy

# The replica enters HAProxy's rotation with a 10 s slow start (haproxy.cfg `slowstart`): measure after it.
SLOW_START = 10.5


@contextlib.contextmanager
def in_front(service_port: int, out: Path) -> Iterator[str]:
    """HAProxy on a free port in front of the replica on `service_port`; yields its base URL."""
    port, stats = free_port(), free_port()
    inventory = out / "haproxy-servers.cfg"
    write_inventory(inventory, {"app1": service_port})
    env = {
        **os.environ,
        "LB_BIND": f"127.0.0.1:{port}",
        "LB_STATS_BIND": f"127.0.0.1:{stats}",
        "LB_ADMIN_SOCKET": str(out / "haproxy.sock"),
        "LB_RATE_LIMIT": "1000000000",  # one load generator is not a client to limit
    }
    argv = [haproxy_binary(), "-db", "-f", str(ROOT / "haproxy.cfg"), "-f", str(inventory)]
    with (out / "haproxy.log").open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)  # noqa: S603
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not healthy(base, timeout=2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"HAProxy did not pass requests to the service; see {out / 'haproxy.log'}")
            time.sleep(0.2)
        log(f"HAProxy on {base} in front of port {service_port}; waiting out its {SLOW_START:g} s slow start")
        time.sleep(SLOW_START)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
