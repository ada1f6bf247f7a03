"""What `python -m ops.cluster status` and `start` print about a cluster: processes, HAProxy, addresses."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

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
    if standby := cluster.state.get("standby"):
        proc = cluster.process("standby")
        pid = f"pid {proc.pid}" if proc and procs.running(proc) else "not running"
        lines.append(f"standby {pid} on 127.0.0.1:{standby['port']}  replay {_replay(standby['url'])}")
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
    if standby := state.get("standby"):
        via = f"; the replicas read it through PgBouncer as {_masked(standby['via'])}" if standby.get("via") else ""
        rows.append(
            f"  standby         {_masked(standby['url'])} (streaming from the primary{via};"
            f" data and log in {rel}/standby/, removed by make cluster-stop)"
        )
    for name, (host, port) in cluster.replicas().items():
        proc = cluster.process(name)
        pid = proc.pid if proc else "?"
        rows.append(f"  {name:<15} http://{host}:{port} (pid {pid}, metrics /metrics, log {rel}/{name}.log)")
    rows.append("  stop            make cluster-stop     rolling restart: make rolling-restart")
    return "\n".join(rows)


def _replay(url: str) -> str:
    """How far the standby at `url` is behind (its own view), or why that is unknown."""
    try:
        with psycopg2.connect(url, connect_timeout=2) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT pg_is_in_recovery(), CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
                " THEN 0 ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END"
            )
            recovering, lag = cur.fetchone()
        conn.close()
    except psycopg2.Error as exc:
        return f"unreachable ({str(exc).strip().splitlines()[0]})"
    if not recovering:
        return "not a standby (promoted?)"
    return f"lag {float(lag or 0):.3f} s"


def _masked(url: str) -> str:
    """`url` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(":" + parts.password + "@", ":***@", 1)))
