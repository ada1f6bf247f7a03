"""Run N Conduit replicas behind HAProxy on this host.

    python -m ops.cluster start --replicas 3    # make cluster REPLICAS=3 (PgBouncer on :6432 in front of PostgreSQL)
    python -m ops.cluster start --standby       # make cluster STANDBY=1: plus a streaming standby on :5433
    python -m ops.cluster status
    python -m ops.cluster rolling-restart       # make rolling-restart
    python -m ops.cluster stop                  # make cluster-stop
    python -m ops.cluster kill app2 / revive app2   (fault drills)
    python -m ops.cluster admin show stat       (one HAProxy runtime API command)

Everything lives in the state directory (var/cluster/ by default): `servers.cfg`, the replica
inventory HAProxy loads after haproxy.cfg (names and ports are read back from it, nowhere else),
`state.json` (pids with their start times, the replicas' environment; mode 600: it may hold
SECRET_KEY), one log per process, HAProxy's admin socket and `pgbouncer/` (PgBouncer's ini and log:
on PostgreSQL the replicas connect through PgBouncer in transaction pooling mode, ops/pgbouncer/), and
with --standby `standby/` (the standby's data directory and log, ops/standby.py; removed by stop).
Each process leads its own session, so a stop or a kill reaches a gunicorn master and its workers,
and only the processes recorded here.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

from ops import database, launcher, procs, standby
from ops.inventory import BACKEND, ROOT, ClusterError, ClusterState, haproxy_binary, port_free, write_inventory
from ops.lbadmin import Admin, AdminError
from ops.pgbouncer import PgBouncer, PgBouncerError, PoolSettings
from ops.status import describe, status

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/conduit"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PGBOUNCER_PORT = 6432
DEFAULT_PGBOUNCER_POOL = 40
DEFAULT_STANDBY_PORT = 5433
# PostgreSQL connections left beside PgBouncer's pool: migrations (DATABASE_DIRECT_URL) and a psql.
DIRECT_HEADROOM = 5


class Cluster(ClusterState):
    """Start, stop and restart the processes of the cluster whose state lives in `dir`."""

    # -- start ------------------------------------------------------------------------------------
    def start(
        self,
        replicas: int = 3,
        workers: int = 2,
        port: int = 8080,
        stats_port: int = 8404,
        first_port: int = 8001,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        replica_ports: Sequence[int] | None = None,
        pgbouncer_port: int | None = DEFAULT_PGBOUNCER_PORT,
        pgbouncer_pool: int = DEFAULT_PGBOUNCER_POOL,
        standby_port: int | None = None,
    ) -> None:
        """Migrate, start PgBouncer, the replicas and HAProxy, wait until HAProxy sees every replica UP.

        On PostgreSQL the replicas connect through PgBouncer on `pgbouncer_port` (None: straight to
        PostgreSQL), which holds at most `pgbouncer_pool` server connections. With `standby_port`, a
        throwaway streaming standby of the primary runs on that port (data in `dir`/standby/) and the
        replicas read from it (DATABASE_REPLICA_URLS), through PgBouncer when it runs."""
        if self.running():
            raise ClusterError(f"a cluster is already running from {self.dir}: `make cluster-stop` first")
        chosen = replica_ports or [first_port + i for i in range(replicas)]
        ports = {f"app{i}": port for i, port in enumerate(chosen, start=1)}
        busy = [
            p
            for p in (port, stats_port, *ports.values(), pgbouncer_port, standby_port)
            if p is not None and not port_free(p)
        ]
        if busy:
            raise ClusterError(f"ports already in use on 127.0.0.1: {busy}")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        base = {**os.environ, **(env or {})}
        base.pop("BIND", None)  # BIND would win over each replica's PORT
        defaults = {
            "DATABASE_URL": DEFAULT_DATABASE_URL,
            "REDIS_URL": DEFAULT_REDIS_URL,
            "APP_ENV": "production",
            # Lame duck on a plain SIGTERM: /healthz answers 503 this long before the listener closes,
            # enough for HAProxy (inter 1 s, fall 2) to stop sending. rolling-restart drains first anyway.
            "SHUTDOWN_DELAY": "3",
        }
        base.update({k: v for k, v in defaults.items() if not base.get(k)})
        if base["APP_ENV"] == "production" and not base.get("SECRET_KEY"):
            base["SECRET_KEY"] = secrets.token_urlsafe(48)  # one key for all replicas, kept in state.json
        base.update(HOST="127.0.0.1", WEB_CONCURRENCY=str(workers))
        lb = {
            "LB_BIND": f"127.0.0.1:{port}",
            "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
            "LB_ADMIN_SOCKET": str(self.socket),
        }
        self.state = {
            "env": base,
            "lb_env": lb,
            "api": f"http://127.0.0.1:{port}",
            "stats": f"http://127.0.0.1:{stats_port}",
        }
        self._save()
        write_inventory(self.inventory, ports)
        self.check_config()
        try:
            max_connections = database.prepare(base["DATABASE_URL"], self.log)
        except database.DatabaseError as exc:
            raise ClusterError(str(exc)) from exc
        if max_connections is not None and pgbouncer_port is None:
            database.fit_budget(base, replicas * workers, max_connections, self.log)
            self._save()
        if max_connections is not None:
            base["DATABASE_DIRECT_URL"] = base.get("DATABASE_DIRECT_URL") or base["DATABASE_URL"]
        if standby_port is not None:
            if max_connections is None:
                raise ClusterError("a standby needs PostgreSQL: DATABASE_URL is not a postgresql:// URL")
            try:  # before anything is started: a primary that cannot serve a base backup fails here
                standby.check_primary(base["DATABASE_DIRECT_URL"])
            except standby.StandbyError as exc:
                raise ClusterError(f"cannot start a standby: {exc}") from exc
        bin_dir = Path(sys.executable).parent
        migrate = procs.spawn(
            [str(bin_dir / "flask"), "--app", "service", "db", "upgrade"], base, ROOT, self.dir / "migrate.log"
        )
        if not procs.wait_gone(migrate, timeout):
            raise ClusterError(f"migrations did not finish in {timeout:.0f} s; see {self.dir / 'migrate.log'}")
        try:
            standbys = self._start_standby(base, standby_port, timeout) if standby_port is not None else {}
            if max_connections is not None and pgbouncer_port is not None:
                pool = min(pgbouncer_pool, max_connections - database.RESERVED - DIRECT_HEADROOM)
                clients = replicas * workers * database.per_worker(base)
                settings = PoolSettings(pool_size=pool, max_client_conn=clients + 100)
                standbys = self._start_pgbouncer(base, pgbouncer_port, settings, standbys)
            if standbys:
                listed = [u for u in base.get("DATABASE_REPLICA_URLS", "").split(",") if u]
                base["DATABASE_REPLICA_URLS"] = ",".join([*listed, *standbys.values()])
                self._save()
            started = [self._spawn_replica(name) for name in ports]
            for replica in started:
                self._wait_healthy(replica, timeout)
            # -W: master-worker, so `kill -USR2 <pid>` reloads haproxy.cfg and servers.cfg without a lost connection.
            haproxy = procs.spawn(self._haproxy_argv("-W", "-db"), {**base, **lb}, ROOT, self.dir / "haproxy.log")
            self._record("haproxy", haproxy)
            self._wait_lb_up(list(ports), timeout)
        except BaseException:
            self.stop()
            raise

    def _start_standby(self, env: dict[str, str], port: int, timeout: float) -> dict[str, str]:
        """Base-backup the primary into `dir`/standby/ and run it on `port`; {alias: its URL}."""
        primary = env["DATABASE_DIRECT_URL"]
        server = standby.Standby(self.dir / "standby", primary, port)
        self.state["standby"] = {"port": port, "url": server.url, "dir": str(server.folder)}
        self._save()
        t0 = time.monotonic()
        try:
            server.create()
            self._record("standby", server.start(timeout))
        except standby.StandbyError as exc:
            raise ClusterError(f"cannot start a standby: {exc}") from exc
        took = time.monotonic() - t0
        self.log(f"standby on 127.0.0.1:{port}: streaming from the primary (base backup and start {took:.1f} s)")
        return {f"{make_url(primary).database}_standby": server.url}

    def _start_pgbouncer(
        self, env: dict[str, str], port: int, pool: PoolSettings, standbys: dict[str, str]
    ) -> dict[str, str]:
        """Start PgBouncer in front of env's DATABASE_URL (and each standby, as a database of its own) and
        point the replicas' DATABASE_URL at it; {alias: the standby's URL through PgBouncer}."""
        bouncer = PgBouncer(self.dir / "pgbouncer", env["DATABASE_DIRECT_URL"], port, pool, standbys)
        try:
            self._record("pgbouncer", bouncer.start())
        except PgBouncerError as exc:
            raise ClusterError(str(exc)) from exc
        env["DATABASE_URL"] = bouncer.url
        self.state["pgbouncer"] = {"port": port, "pool_size": pool.pool_size, "max_client_conn": pool.max_client_conn}
        pooled = {alias: bouncer.standby_url(alias) for alias in standbys}
        if pooled:
            self.state["standby"]["via"] = next(iter(pooled.values()))
        self._save()
        self.log(
            f"PgBouncer on 127.0.0.1:{port}: transaction pooling, at most {pool.pool_size} PostgreSQL connections"
            f" per server for up to {pool.max_client_conn} clients"
        )
        return pooled

    def _haproxy_argv(self, *extra: str) -> list[str]:
        return [haproxy_binary(), *extra, "-f", str(ROOT / "haproxy.cfg"), "-f", str(self.inventory)]

    def check_config(self) -> None:
        """`haproxy -c` on haproxy.cfg + the inventory, with the cluster's environment."""
        env = {**os.environ, **self.state.get("env", {}), **self.state.get("lb_env", {})}
        argv = self._haproxy_argv("-c", "-q")
        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
        if out.returncode != 0:
            raise ClusterError(f"haproxy -c failed:\n{out.stdout}{out.stderr}")

    def _spawn_replica(self, name: str) -> launcher.Gunicorn:
        _host, port = self.replicas()[name]
        replica = launcher.start(
            self.state["env"], port, self.dir / f"{name}.log", label=name, append=True, new_session=True
        )
        self._record(name, procs.adopt(replica.proc))
        return replica

    def _wait_healthy(self, replica: launcher.Gunicorn, timeout: float) -> None:
        try:
            replica.wait_healthy(timeout)
        except launcher.LaunchError as exc:
            raise ClusterError(str(exc)) from exc

    def _wait_lb_up(self, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                states = self.admin().servers(BACKEND)
                if all(n in states and states[n].up for n in names):
                    return
            except AdminError:
                pass
            haproxy = self.process("haproxy")
            if haproxy is None or not procs.running(haproxy) or time.monotonic() > deadline:
                raise ClusterError(f"HAProxy does not see {names} UP; see {self.dir / 'haproxy.log'}")
            time.sleep(0.1)

    # -- stop -------------------------------------------------------------------------------------
    def stop(self, timeout: float = 40.0) -> list[str]:
        """Stop HAProxy, then every replica (SIGTERM, SIGKILL after `timeout`), PgBouncer, the standby
        (whose data directory goes too); only recorded processes."""
        self.reload()
        alive = {n: p for n in self.state.get("processes", {}) if (p := self.process(n)) and procs.owns_group(p)}
        if "haproxy" in alive:  # first: no request is sent to a replica that is going away
            procs.stop(alive["haproxy"], timeout)
        replicas = {n: p for n, p in alive.items() if n not in ("haproxy", "pgbouncer", "standby")}
        for proc in replicas.values():  # all at once: each takes SHUTDOWN_DELAY + its drain
            if not procs.signal_leader(proc, signal.SIGTERM):
                procs.signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in replicas.values():
            procs.finish(proc, max(0.0, deadline - time.monotonic()))  # SIGKILL to what is left at the deadline
        if "pgbouncer" in alive:  # last: the replicas' in-flight requests needed it
            procs.stop(alive["pgbouncer"], 10.0)
        if "standby" in alive:  # fast shutdown: its clients are gone
            standby.stop(alive["standby"])
        if "standby" in self.state:  # throwaway: a new start takes a fresh base backup
            standby.remove(Path(self.state["standby"]["dir"]))
        stopped = sorted(alive, key=lambda n: (n != "haproxy", n == "pgbouncer", n == "standby"))
        self.state["processes"] = {}
        if self.state_file.exists():
            self._save()
        self.socket.unlink(missing_ok=True)
        return stopped

    # -- single replicas --------------------------------------------------------------------------
    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the replica's whole process group (master and workers), as a crash would."""
        self.reload()
        proc = self.process(name)
        if proc is None or not procs.signal_group(proc, sig):
            raise ClusterError(f"{name} is not running")

    def revive(self, name: str, timeout: float = 60.0) -> None:
        """Start a replica that is not running; HAProxy's health checks bring it back."""
        self.reload()
        if name not in self.replicas():
            raise ClusterError(f"{name} is not a replica of this cluster ({', '.join(self.replicas())})")
        proc = self.process(name)
        if proc is not None and procs.owns_group(proc):
            raise ClusterError(f"{name} is running (pid {proc.pid})")
        self._wait_healthy(self._spawn_replica(name), timeout)

    # -- rolling restart --------------------------------------------------------------------------
    def rolling_restart(
        self, drain_timeout: float = 30.0, stop_timeout: float = 40.0, up_timeout: float = 60.0, force: bool = False
    ) -> list[dict[str, float]]:
        """Restart replicas one at a time without failing a request; return per-replica timings.

        For each: drain in HAProxy, wait until it has no request in flight (at most
        `drain_timeout`), SIGTERM, wait for exit (SIGKILL after `stop_timeout`), start it again,
        wait until HAProxy sees it UP, mark it ready. A replica that does not come back stays
        drained and the restart stops there with an error."""
        self.reload()
        admin, names = self.admin(), list(self.replicas())
        states = admin.servers(BACKEND)
        not_ready = [n for n in names if n not in states or not states[n].ready]
        if not_ready and not force:
            raise ClusterError(f"not every replica is UP and ready ({not_ready}); fix that first or use --force")
        timings = []
        for name in names:
            t0 = time.monotonic()
            admin.set_state(BACKEND, name, "drain")
            drained = self._wait_drained(admin, name, drain_timeout)
            t1 = time.monotonic()
            proc = self.process(name)
            graceful = procs.stop(proc, stop_timeout) if proc is not None else True
            # Seen DOWN first, so the UP awaited below is the new process's (and slowstart applies).
            self._wait_lb(admin, name, up=False, timeout=10.0)
            t2 = time.monotonic()
            self._wait_healthy(self._spawn_replica(name), up_timeout)
            t3 = time.monotonic()
            if not self._wait_lb(admin, name, up=True, timeout=up_timeout):
                raise ClusterError(f"HAProxy does not see the new {name} UP; it stays drained")
            admin.set_state(BACKEND, name, "ready")
            t4 = time.monotonic()
            timings.append({"drain": t1 - t0, "stop": t2 - t1, "boot": t3 - t2, "rise": t4 - t3, "total": t4 - t0})
            note = "" if drained else f" (still busy after {drain_timeout:.0f} s)"
            note += "" if graceful else " (SIGKILLed after stop timeout)"
            self.log(
                f"{name}: drained {t1 - t0:.1f} s{note}, stopped {t2 - t1:.1f} s, booted {t3 - t2:.1f} s, "
                f"UP in HAProxy {t4 - t3:.1f} s"
            )
        return timings

    def _wait_lb(self, admin: Admin, name: str, up: bool, timeout: float) -> bool:
        """Wait until HAProxy's health checks see `name` UP (or DOWN); False on timeout."""
        deadline = time.monotonic() + timeout
        while admin.servers(BACKEND)[name].up != up:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _wait_drained(self, admin: Admin, name: str, timeout: float) -> bool:
        """True once HAProxy shows no request in flight or queued on `name` twice in a row."""
        deadline, zeros = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            row = admin.stats(BACKEND)[name]
            zeros = zeros + 1 if row["scur"] == "0" and row["qcur"] in ("0", "") else 0
            if zeros >= 2:
                return True
            time.sleep(0.05)
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=str(ROOT / "var" / "cluster"), help="default: var/cluster")
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="migrate, start N replicas and HAProxy, print where everything is")
    start.add_argument("--replicas", type=int, default=3)
    start.add_argument("--workers", type=int, default=2, help="gunicorn workers per replica")
    start.add_argument("--port", type=int, default=8080, help="HAProxy's public port")
    start.add_argument("--stats-port", type=int, default=8404)
    start.add_argument("--first-port", type=int, default=8001, help="replica i listens on first-port + i - 1")
    start.add_argument("--pgbouncer-port", type=int, default=DEFAULT_PGBOUNCER_PORT, help="PgBouncer's port")
    start.add_argument(
        "--pgbouncer-pool", type=int, default=DEFAULT_PGBOUNCER_POOL, help="PostgreSQL connections PgBouncer may open"
    )
    start.add_argument("--no-pgbouncer", action="store_true", help="replicas connect straight to PostgreSQL")
    start.add_argument(
        "--standby",
        action="store_true",
        help="also run a throwaway streaming standby of the primary; the replicas read from it",
    )
    start.add_argument("--standby-port", type=int, default=DEFAULT_STANDBY_PORT, help="the standby's port")
    sub.add_parser("stop", help="stop exactly the processes this cluster started")
    sub.add_parser("status", help="each replica's process and HAProxy state")
    roll = sub.add_parser("rolling-restart", help="drain, restart and re-admit replicas one at a time")
    roll.add_argument("--drain-timeout", type=float, default=30.0)
    roll.add_argument("--stop-timeout", type=float, default=40.0)
    roll.add_argument("--up-timeout", type=float, default=60.0)
    roll.add_argument("--force", action="store_true", help="run even if a replica is not UP")
    for name, text in (("kill", "SIGKILL a replica's process group (fault drill)"), ("revive", "start a dead replica")):
        sub.add_parser(name, help=text).add_argument("name")
    admin = sub.add_parser("admin", help='one command on the HAProxy admin socket, e.g. "show stat"')
    admin.add_argument("words", nargs="+")
    args = parser.parse_args(argv)
    cluster = Cluster(args.state_dir)
    try:
        if args.command == "start":
            cluster.start(
                args.replicas,
                args.workers,
                args.port,
                args.stats_port,
                args.first_port,
                pgbouncer_port=None if args.no_pgbouncer else args.pgbouncer_port,
                pgbouncer_pool=args.pgbouncer_pool,
                standby_port=args.standby_port if args.standby else None,
            )
            print(describe(cluster))
        elif args.command == "stop":
            stopped = cluster.stop()
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
        elif args.command == "status":
            print(status(cluster))
        elif args.command == "rolling-restart":
            cluster.rolling_restart(args.drain_timeout, args.stop_timeout, args.up_timeout, args.force)
        elif args.command == "kill":
            cluster.kill(args.name)
        elif args.command == "revive":
            cluster.revive(args.name)
        elif args.command == "admin":
            print(cluster.admin().command(" ".join(args.words)), end="")
    except (ClusterError, AdminError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
