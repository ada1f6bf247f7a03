"""A capacity plan from a benchmark run (`make capacity`): cores, replicas, connections, database and Redis load.

Reads the JSON that `make bench` writes (bench/results/latest.json, or a recorded run in bench/recorded/)
and writes docs/capacity.md: for each request rate, the cores and service replicas, the PgBouncer and
PostgreSQL connections, the writes and uncached reads the primary and the read replicas take, the Redis
operations, and which single-instance tier saturates first. Every figure comes from the run (per core)
or from a stated assumption; to plan for other hardware run `make bench` there, then `make capacity`.

The method (docs/capacity.md repeats it with the figures):

  per-request cost   the mix scenario's req/s divided by the cores the service had (wrk, PostgreSQL and
                     Redis shared those cores, so the cost is an upper bound); another --mix or
                     --hit-ratio scales it by a model of the scenarios' own per-core rates
  app cores          rate x cost / utilisation; replicas = ceil(cores / cores per replica) + 1 spare
  primary            writes/s = rate x write share, one transaction each
  read replicas      uncached reads/s = rate x read share x (1 - hit ratio), + 1 spare replica
  Redis              round trips per request, counted in service/caching/cache.py and fastpath.py
  connections        per worker: DB_POOL_SIZE + DB_WRITE_POOL_SIZE + 2 x DB_MAX_OVERFLOW (config/settings.py);
                     PostgreSQL server connections by Little's law (transactions/s x time held) x 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: import bench and config from the checkout
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from config.settings import BaseConfig

ROOT = Path(__file__).resolve().parent.parent
RECORDED = ROOT / "bench" / "recorded"
DOC = ROOT / "docs" / "capacity.md"
RATES = (10_000, 100_000, 1_000_000)

# The read scenarios bench/wrk/mix.lua spreads its reads over, evenly; every one has a fast path
# (service/caching/fastpath.py), whose miss costs one more lookup before Flask's own. A signed-in hit
# runs no statement (the viewer's sets are in Redis): after a favorite that changed a row, the
# favoriter's set is built again and the article's count loaded once (STATEMENTS_PER_FAVORITE).
MIX_READS = ("anon_list", "auth_list", "article", "profile", "tags", "feed")
MIX_READ_SHARE = 0.9  # bench/wrk/mix.lua: 180 of 200 rolls
FAVORITE_SHARE_OF_WRITES = 0.5  # bench/wrk/mix.lua: 10 of its 20 write rolls favorite or unfavorite
STATEMENTS_PER_FAVORITE = 2  # the favoriter's set and the article's count, read once after the write

# Redis round trips (service/caching/cache.py): a read is one READ_SCRIPT call (generations, value, the
# viewer's sets and moved counts together); a miss adds the fill-lock claim and the fill, and on a
# fast-path route the fast path's lookup comes first;
# a write is one BUMP_SCRIPT call for all its generations, plus one INCR script per window of its rate
# limit (fixed window, "30/minute;1000/day" style: two windows) in service/security/ratelimit.py.
REDIS_PER_HIT = 1
REDIS_PER_MISS = 3  # lookup, fill-lock claim, fill; + 1 on a fast-path route
REDIS_PER_STAMP = 1  # a page with counts records their generations before the fill (STAMP_SCRIPT)
COUNTED_READS = ("anon_list", "auth_list", "article", "feed")  # the mix's reads of pages with favoritesCount
REDIS_PER_WRITE_BUMP = 1
RATE_LIMIT_CALLS_PER_WRITE = 2

# Assumptions that are not in the run (each printed in the plan, each an option).
UTILISATION = 0.6  # target CPU utilisation of the service's cores
DB_CORES = 8  # cores of the PostgreSQL primary and of each read replica
# Round trips/s one Redis serves of this service's calls, measured (2026-11-29, this machine, INFO commandstats
# under `make bench`): EVALSHA 39.8 us per call under the mix, 36.3 on the anonymous list, 57-62 on the
# signed-in list (the read script decodes the page's header and reads its count generations and the viewer's
# sets), so one Redis core serves about 24k of them per second, not the 100k-200k of plain GETs.
REDIS_OPS = 24_000
PGBOUNCER_TPS = 18_000  # transactions/s through one PgBouncer process (pgbench -S on 2 shared vCPUs)
STATEMENT_MS = 1.0  # a statement holds its connection about a millisecond (docs/operations.md)
STATEMENTS_PER_WRITE = 5  # BEGIN, the lookup, the insert, the read-back, COMMIT


class CapacityError(Exception):
    pass


@dataclass(frozen=True)
class Measured:
    """What the plan takes from one run."""

    source: str
    generated_at: str
    machine: str
    cores: int
    workers: int
    mix_rps: float
    mix_connections: int
    hit_ratio: float
    hit_ratio_source: str
    read_rps: dict[str, float]  # cached reads per scenario of the mix
    uncached_rps: dict[str, float]  # NullCache runs per scenario of the mix
    write_rps: float | None  # comment_write with the cache
    write_source: str


@dataclass(frozen=True)
class Assumptions:
    read_share: float = MIX_READ_SHARE
    hit_ratio: float | None = None  # None: the run's
    utilisation: float = UTILISATION
    cores_per_replica: int | None = None  # None: the run's cores
    db_cores: int = DB_CORES
    redis_ops: float = REDIS_OPS
    pgbouncer_tps: float = PGBOUNCER_TPS


def _best(runs: list[dict[str, Any]], server: str, scenario: str) -> dict[str, Any] | None:
    """The run of `scenario` on `server` with the most req/s among those without a failure (else any)."""
    mine = [r for r in runs if r.get("server") == server and r.get("scenario") == scenario and r.get("rps")]
    clean = [r for r in mine if not r.get("failures")]
    return max(clean or mine, key=lambda r: r["rps"], default=None)


def _machine(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    commit = str(m.get("git_commit") or "?")[:7] + (" (uncommitted changes)" if m.get("git_dirty") else "")
    versions = m.get("versions", {})
    return (
        f"{m.get('cpus_usable') or m.get('nproc')} CPUs ({m.get('cpu_model', '?')}), {m.get('memory_mib', '?')} MiB, "
        f"{m.get('platform', '?')}; PostgreSQL {versions.get('postgresql', '?')}, "
        f"Redis {versions.get('redis_server', '?')}; commit {commit}"
    )


def measured(data: dict[str, Any], source: str) -> Measured:
    """The figures of a run (old or new JSON format of bench/run.py); CapacityError without a mix run."""
    runs = data.get("runs") or []
    mix = _best(runs, "cache", "mix")
    if mix is None:
        raise CapacityError(f"{source} has no run of the mix scenario: run `make bench` (all scenarios)")
    machine = data.get("machine", {})
    cores = int(machine.get("cpus_usable") or machine.get("nproc") or 1)
    if mix.get("cached_read_share") is not None:
        hit = min(1.0, float(mix["cached_read_share"]))
        hit_source = "the service's cache hits per GET it answered in the mix run (cached_read_share)"
    elif mix.get("cached_share") is not None:
        hit = min(1.0, float(mix["cached_share"]) / MIX_READ_SHARE)
        hit_source = "the service's cache hits per read in the mix run (cached_share / read share)"
    elif mix.get("cache_hit_ratio") is not None:
        hit = float(mix["cache_hit_ratio"])
        hit_source = "Redis keyspace hits / (hits + misses) in the mix run; the cache's bookkeeping keys count too"
    else:
        raise CapacityError(f"{source}: the mix run has no cache hit figure; pass --hit-ratio")
    reads = {s: r["rps"] for s in MIX_READS if (r := _best(runs, "cache", s))}
    uncached = {s: r["rps"] for s in MIX_READS if (r := _best(runs, "nullcache", s))}
    write = _best(runs, "nullcache", "comment_write")
    write_source = "comment_write with NullCache"
    if write is None:
        write = _best(runs, "cache", "comment_write")
        write_source = "comment_write with the cache (the whole stack on the run's cores: a lower bound)"
    return Measured(
        source=source,
        generated_at=str(data.get("generated_at", "?")),
        machine=_machine(data),
        cores=cores,
        workers=int(data.get("settings", {}).get("gunicorn_workers") or cores),
        mix_rps=float(mix["rps"]),
        mix_connections=int(mix.get("connections", 0)),
        hit_ratio=round(hit, 4),
        hit_ratio_source=hit_source,
        read_rps=reads,
        uncached_rps=uncached,
        write_rps=float(write["rps"]) if write else None,
        write_source=write_source if write else "none in the run",
    )


def _up(value: float) -> int:
    """Rounded up, ignoring float noise (0.1 x 10,000 is 999.9999...)."""
    return math.ceil(round(value, 6))


def _harmonic(rates: list[float]) -> float:
    """The rate of an even mix of requests with these rates (their costs add up)."""
    return len(rates) / sum(1 / r for r in rates)


@dataclass(frozen=True)
class Step:
    rate: float
    cores: int
    replicas: int
    client_connections: int
    pgbouncer_processes: int
    writes: float
    uncached_reads: float
    viewer_statements: float
    read_replicas: int
    primary_pool: int
    replica_pool: int
    redis_ops: float
    tiers: dict[str, float]  # single-instance tier -> share of its capacity used


@dataclass(frozen=True)
class Plan:
    m: Measured
    a: Assumptions
    hit_ratio: float
    cost_core_s: float  # core-seconds per request
    per_worker_connections: int
    redis_per_request: float
    primary_writes: float  # writes/s one primary takes
    replica_reads: float  # uncached reads/s one read replica takes
    ceilings: dict[str, float]  # single-instance tier -> req/s at which it is full
    steps: list[Step]


def _model_cost(m: Measured, read_share: float, hit: float) -> float:
    if not m.read_rps or not m.uncached_rps or m.write_rps is None:
        raise CapacityError("--mix/--hit-ratio need the read scenarios, their NullCache runs and comment_write")
    cached = _harmonic(list(m.read_rps.values()))
    uncached = _harmonic(list(m.uncached_rps.values()))
    return (read_share * (hit / cached + (1 - hit) / uncached) + (1 - read_share) / m.write_rps) * m.cores


def plan(m: Measured, a: Assumptions, rates: tuple[float, ...] = RATES) -> Plan:
    """The plan for `rates` (req/s) from the measured figures and the assumptions."""
    hit = m.hit_ratio if a.hit_ratio is None else a.hit_ratio
    write_share = 1 - a.read_share
    cost = m.cores / m.mix_rps
    if a.read_share != MIX_READ_SHARE or hit != m.hit_ratio:  # scale by the model, calibrated on the mix
        cost *= _model_cost(m, a.read_share, hit) / _model_cost(m, MIX_READ_SHARE, m.hit_ratio)
    miss = REDIS_PER_MISS + 1 + REDIS_PER_STAMP * len(COUNTED_READS) / len(MIX_READS)
    redis_per_request = a.read_share * (hit * REDIS_PER_HIT + (1 - hit) * miss) + write_share * (
        REDIS_PER_WRITE_BUMP + RATE_LIMIT_CALLS_PER_WRITE
    )
    per_core = a.db_cores / m.cores
    primary = (m.write_rps or 0.0) * per_core
    replica = _harmonic(list(m.uncached_rps.values())) * per_core if m.uncached_rps else 0.0
    ceilings = {"Redis (one instance)": a.redis_ops / redis_per_request}
    if primary and write_share:
        ceilings["PostgreSQL primary (writes)"] = primary / write_share
    per_worker = BaseConfig.DB_POOL_SIZE + BaseConfig.DB_WRITE_POOL_SIZE + 2 * BaseConfig.DB_MAX_OVERFLOW
    cores_per_replica = a.cores_per_replica or m.cores
    steps = []
    for rate in rates:
        cores = _up(rate * cost / a.utilisation)
        replicas = _up(cores / cores_per_replica) + 1
        writes = rate * write_share
        uncached = rate * a.read_share * (1 - hit)
        viewer = writes * FAVORITE_SHARE_OF_WRITES * STATEMENTS_PER_FAVORITE
        read_replicas = (_up(uncached / replica) + 1) if replica else 0
        busy_primary = writes * STATEMENTS_PER_WRITE * STATEMENT_MS / 1000
        busy_replica = (uncached + viewer) / max(read_replicas - 1, 1) * STATEMENT_MS / 1000
        steps.append(
            Step(
                rate=rate,
                cores=cores,
                replicas=replicas,
                client_connections=replicas * m.workers * per_worker,
                pgbouncer_processes=_up((writes + uncached + viewer) / a.pgbouncer_tps),
                writes=writes,
                uncached_reads=uncached,
                viewer_statements=viewer,
                read_replicas=read_replicas,
                primary_pool=max(2, _up(2 * busy_primary)),
                replica_pool=max(2, _up(2 * busy_replica)),
                redis_ops=rate * redis_per_request,
                tiers={tier: rate / ceiling for tier, ceiling in ceilings.items()},
            )
        )
    return Plan(m, a, hit, cost, per_worker, redis_per_request, primary, replica, ceilings, steps)


def default_run(folder: Path = RECORDED) -> Path:
    """The newest recorded run (by its generated_at) that has a mix run and a write run (comment_write):
    a plan needs both (a short A/B of a few read scenarios is not a run to plan from)."""
    found = []
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        scenarios = {r.get("scenario") for r in data.get("runs") or []}
        if {"mix", "comment_write"} <= scenarios:
            found.append((str(data.get("generated_at", "")), path.name, path))
    if not found:
        raise CapacityError(
            f"no run with the mix and comment_write scenarios in {folder}: run `make bench` and pass --run"
        )
    return max(found)[2]


def load(path: Path) -> Measured:
    source = path.resolve()
    name = str(source.relative_to(ROOT)) if source.is_relative_to(ROOT) else str(path)
    return measured(json.loads(path.read_text()), name)


def _mix(text: str) -> float:
    try:
        reads, writes = (float(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mix {text!r}: READS/WRITES in percent, e.g. 90/10") from None
    if reads < 0 or writes < 0 or reads + writes != 100:
        raise argparse.ArgumentTypeError(f"--mix {text!r}: two shares that add up to 100")
    return reads / 100


def main(argv: list[str] | None = None) -> int:
    from bench.capacity_doc import render

    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--run", type=Path, help="a bench JSON (default: the newest bench/recorded/*.json with a mix run)"
    )
    parser.add_argument(
        "--out", type=Path, default=DOC, help="where the plan goes (default docs/capacity.md; - for stdout)"
    )
    parser.add_argument("--rates", default=",".join(map(str, RATES)), help="req/s to plan for, comma-separated")
    parser.add_argument("--mix", type=_mix, default=MIX_READ_SHARE, help="READS/WRITES in percent (default 90/10)")
    parser.add_argument("--hit-ratio", type=float, help="cache hits per read, 0-1 (default: the run's)")
    parser.add_argument(
        "--utilisation", type=float, default=UTILISATION, help=f"target CPU use (default {UTILISATION})"
    )
    parser.add_argument("--cores-per-replica", type=int, help="cores of one service replica (default: the run's)")
    parser.add_argument(
        "--db-cores", type=int, default=DB_CORES, help=f"cores per database server (default {DB_CORES})"
    )
    parser.add_argument("--redis-ops", type=float, default=REDIS_OPS, help=f"ops/s of one Redis (default {REDIS_OPS})")
    args = parser.parse_args(argv)
    if args.hit_ratio is not None and not 0 <= args.hit_ratio <= 1:
        parser.error("--hit-ratio is a share between 0 and 1")
    try:
        rates = tuple(float(r) for r in args.rates.split(","))
        m = load(args.run or default_run())
        a = replace(
            Assumptions(),
            read_share=args.mix,
            hit_ratio=args.hit_ratio,
            utilisation=args.utilisation,
            cores_per_replica=args.cores_per_replica,
            db_cores=args.db_cores,
            redis_ops=args.redis_ops,
        )
        text = render(plan(m, a, rates))
    except (CapacityError, ValueError, OSError) as exc:
        print(f"capacity: {exc}", file=sys.stderr)
        return 2
    if str(args.out) == "-":
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
        print(f"capacity: wrote {args.out} from {m.source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
