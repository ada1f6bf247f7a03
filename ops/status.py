"""What `python -m ops.cluster status` and `start` print about a cluster: processes, HAProxy, addresses."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from ops import procs
from ops.inventory import BACKEND, ClusterState
from ops.lbadmin import AdminError


def status(cluster: ClusterState) -> str:
    """One line per replica (its process, HAProxy's view of it), then HAProxy and PgBouncer."""
    cluster.reload()
    lines, stats = [], {}
    haproxy = cluster.process("haproxy")
    if haproxy is not None and procs.running(haproxy):
        try:
            stats = cluster.admin().stats(BACKEND)
        except AdminError as exc:
            lines.append(f"HAProxy admin socket unreachable: {exc}")
    for name, (host, port) in cluster.replicas().items():
        proc, row = cluster.process(name), stats.get(name, {})
        pid = f"pid {proc.pid}" if proc and procs.running(proc) else "not running"
        lb = f"haproxy: {row.get('status', '?'):<6} in flight {row.get('scur', '?'):>3}"
        counters = f"retries {row.get('wretr', '?')}  redispatches {row.get('wredis', '?')}"
        lines.append(f"{name:<6} {host}:{port:<6} {pid:<12} {lb}  {counters}  check {row.get('check_status', '?')}")
    lines.append(f"haproxy {'pid ' + str(haproxy.pid) if haproxy and procs.running(haproxy) else 'not running'}")
    if "pgbouncer" in cluster.state:
        bouncer = cluster.process("pgbouncer")
        alive = bouncer is not None and procs.running(bouncer)
        lines.append(f"pgbouncer {'pid ' + str(bouncer.pid) if alive and bouncer else 'not running'}")
    return "\n".join(lines)


def describe(cluster: ClusterState) -> str:
    """Where everything of a started cluster is: URLs, logs, the admin socket, how to stop it."""
    state = cluster.state
    api, stats, env = state["api"], state["stats"], state["env"]
    rel = os.path.relpath(cluster.dir) if cluster.dir.is_relative_to(Path.cwd()) else str(cluster.dir)
    rows = [
        f"Conduit: {len(cluster.replicas())} replicas behind HAProxy (state in {rel}/)",
        f"  API             {api}/api   e.g. curl {api}/api/tags",
        f"  API docs        {api}/api/docs",
        f"  HAProxy stats   {stats}/stats   Prometheus {stats}/metrics   LB health {stats}/healthz",
        f"  admin socket    {rel}/haproxy.sock   (python -m ops.cluster status)",
        f"  HAProxy log     {rel}/haproxy.log",
        f"  PostgreSQL      {_masked(env.get('DATABASE_DIRECT_URL') or env['DATABASE_URL'])}"
        f"   Redis {_masked(env['REDIS_URL'])}",
    ]
    if bouncer := state.get("pgbouncer"):
        rows.append(
            f"  PgBouncer       {_masked(env['DATABASE_URL'])} (transaction pooling, {bouncer['pool_size']}"
            f" server connections; ini and log in {rel}/pgbouncer/)"
        )
    for name, (host, port) in cluster.replicas().items():
        proc = cluster.process(name)
        pid = proc.pid if proc else "?"
        rows.append(f"  {name:<15} http://{host}:{port} (pid {pid}, metrics /metrics, log {rel}/{name}.log)")
    rows.append("  stop            make cluster-stop     rolling restart: make rolling-restart")
    return "\n".join(rows)


def _masked(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1)))
