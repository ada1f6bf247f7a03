"""docs/capacity.md from a capacity plan (bench/capacity.py): the figures, the method and what they rest on."""

from __future__ import annotations

from bench.capacity import (
    COUNTED_READS,
    FAVORITE_SHARE_OF_WRITES,
    MIX_READ_SHARE,
    MIX_READS,
    PGBOUNCER_TPS,
    RATE_LIMIT_CALLS_PER_WRITE,
    REDIS_PER_STAMP,
    STATEMENT_MS,
    STATEMENTS_PER_FAVORITE,
    STATEMENTS_PER_WRITE,
    Plan,
)


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _rate(value: float) -> str:
    for size, unit in ((1_000_000, "M"), (1_000, "k")):
        if value >= size and value % size == 0:
            return f"{value / size:.0f}{unit}"
    return _n(value)


def _source(p: Plan) -> list[str]:
    m = p.m
    mix = f"{MIX_READ_SHARE * 100:.0f}/{(1 - MIX_READ_SHARE) * 100:.0f}"
    reads = ", ".join(f"{s} {_n(r)}" for s, r in m.read_rps.items()) or "none"
    uncached = ", ".join(f"{s} {_n(r)}" for s, r in m.uncached_rps.items()) or "none"
    return [
        f"- **Run**: `{m.source}`, recorded {m.generated_at}.",
        f"- **Machine**: {m.machine}.",
        f"- **Service**: {m.workers} gunicorn workers on {m.cores} cores, shared with wrk, PostgreSQL and Redis.",
        f"- **Mix** ({mix} reads/writes, `bench/wrk/mix.lua`): {_n(m.mix_rps)} req/s at {m.mix_connections} "
        f"connections (the best run without a failure), cache hit ratio {m.hit_ratio:.2f} ({m.hit_ratio_source}).",
        f"- **Cached reads**, req/s: {reads}. **Uncached reads** (NullCache), req/s: {uncached}.",
        f"- **Writes**: {_n(m.write_rps or 0)} req/s, {m.write_source}.",
    ]


def _method(p: Plan) -> list[str]:
    a, m = p.a, p.m
    mix = f"{a.read_share * 100:g}/{(1 - a.read_share) * 100:g}"
    return [
        f"Planned mix: {mix} reads/writes, cache hit ratio {p.hit_ratio:.2f} per read.",
        "",
        "| quantity | how it is computed | figure |",
        "|---|---|---|",
        f"| cost of a request | the run's cores / the mix's req/s ({m.cores} / {_n(m.mix_rps)}); another "
        "`--mix` or `--hit-ratio` scales it by the scenarios' own rates (harmonic means of the cached reads, "
        "the NullCache reads and comment_write), calibrated on the measured mix. wrk, PostgreSQL and Redis "
        f"used the same cores, so this over-counts the service's share | {p.cost_core_s * 1000:.2f} core-ms |",
        f"| service cores | rate x cost / {a.utilisation:g} target utilisation | |",
        f"| service replicas | ⌈cores / {a.cores_per_replica or m.cores} cores per replica⌉ + 1, to survive the "
        f"loss of one; {m.workers} workers each | |",
        f"| client connections (PgBouncer `max_client_conn`) | replicas x workers x ({p.per_worker_connections} = "
        "`DB_POOL_SIZE` + `DB_WRITE_POOL_SIZE` + 2 x `DB_MAX_OVERFLOW`, the defaults of `config/settings.py`), "
        "the rule of [PgBouncer](operations.md#pgbouncer) | |",
        f"| PgBouncer processes | database transactions/s / {_n(PGBOUNCER_TPS)} per process (assumed: `pgbench -S` "
        "through one PgBouncer on 2 shared vCPUs; one process uses one core) | |",
        "| writes/s on the primary | rate x write share; one transaction each | |",
        "| uncached reads/s | rate x read share x (1 - hit ratio); each runs on a read replica (on the primary "
        "without `DATABASE_REPLICA_URLS`) | |",
        f"| viewer statements/s | writes/s x {FAVORITE_SHARE_OF_WRITES:g} (the favorites of the mix) x "
        f"{STATEMENTS_PER_FAVORITE}: a cached signed-in page runs no statement (the viewer's sets are in Redis); "
        "after a favorite, the favoriter's set is built again and the article's count loaded once | |",
        f"| primary write capacity | the run's write rate per core x {a.db_cores} cores (assumed primary size) | "
        f"{_n(p.primary_writes)} writes/s |",
        f"| one read replica | the NullCache reads' rate per core x {a.db_cores} cores | {_n(p.replica_reads)} "
        "uncached reads/s |",
        "| read replicas | ⌈uncached reads / one replica⌉ + 1 spare | |",
        f"| PostgreSQL server connections (`default_pool_size`) | 2 x Little's law: transactions/s x time a "
        f"connection is held ({STATEMENT_MS:g} ms per statement, {STATEMENTS_PER_WRITE} statements per write); "
        f"keep it near 2 x {a.db_cores} cores + 1 of the database host and `max_connections` above the sum | |",
        f"| Redis round trips per request | reads: 1 per hit (one `READ_SCRIPT` call), 3 per miss (+ the fill "
        f"lock's claim and the fill), + 1 as every read has a fast path (its lookup comes before Flask's), + "
        f"{REDIS_PER_STAMP} on the {len(COUNTED_READS)} of {len(MIX_READS)} reads whose pages show counts (their "
        "generations are recorded before the fill); "
        f"writes: 1 `BUMP_SCRIPT` call + {RATE_LIMIT_CALLS_PER_WRITE} rate-limit windows (one `INCR` script each) | "
        f"{p.redis_per_request:.2f} |",
        "| Redis with read replicas | not in the figures: one more call per write (the writer's WAL position, "
        "`rw:<user>`) and per signed-in read that reaches a replica (its floor) | |",
        f"| one Redis | {_n(a.redis_ops)} round trips/s: measured on this machine, `usec_per_call` of "
        "`cmdstat_evalsha` in `INFO commandstats` under `make bench` (39.8 us under the mix, 36.3 on the "
        "anonymous list, 57-62 on the signed-in list: the read script decodes the page's header and reads its "
        "count generations and the viewer's sets, far more than a `GET`, whose 100k-200k/s do not apply); "
        "measure yours the same way and pass `--redis-ops`; plan the next step when it passes half | |",
    ]


def _table(p: Plan) -> list[str]:
    rows: list[tuple[str, list[str]]] = [
        ("service cores", [_n(s.cores) for s in p.steps]),
        ("service replicas", [_n(s.replicas) for s in p.steps]),
        ("client connections to PgBouncer", [_n(s.client_connections) for s in p.steps]),
        ("PgBouncer processes", [_n(s.pgbouncer_processes) for s in p.steps]),
        ("writes/s (primary)", [_n(s.writes) for s in p.steps]),
        ("uncached reads/s (read replicas)", [_n(s.uncached_reads) for s in p.steps]),
        ("viewer statements/s (read replicas)", [_n(s.viewer_statements) for s in p.steps]),
        ("read replicas (+1 spare)", [_n(s.read_replicas) for s in p.steps]),
        ("server connections, primary", [_pool(p, s.primary_pool) for s in p.steps]),
        ("server connections, per read replica", [_pool(p, s.replica_pool) for s in p.steps]),
        ("Redis round trips/s", [_n(s.redis_ops) for s in p.steps]),
    ]
    for tier in sorted(p.ceilings, key=p.ceilings.__getitem__):
        rows.append((f"{tier}: share of capacity", [f"{s.tiers[tier] * 100:,.0f} %" for s in p.steps]))
    rows.append(("saturates first", [_first(s.tiers) for s in p.steps]))
    head = "| per second | " + " | ".join(f"{_rate(s.rate)} req/s" for s in p.steps) + " |"
    lines = [head, "|---|" + "---|" * len(p.steps)]
    lines += [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows]
    return lines


def _pool(p: Plan, needed: int) -> str:
    """A database's server connections: Little's law, capped near 2 x its cores + 1 (past that it queues on CPU)."""
    cap = 2 * p.a.db_cores + 1
    return _n(needed) if needed <= cap else f"{cap} (capped at 2 x cores + 1; 2 x Little's law: {_n(needed)})"


def _first(tiers: dict[str, float]) -> str:
    share, tier = max((share, tier) for tier, share in tiers.items())
    if share < 1:
        return f"none (nearest: {tier}, {share * 100:,.0f} %)"
    return tier


def _ceilings(p: Plan) -> list[str]:
    order = sorted(p.ceilings.items(), key=lambda kv: kv[1])
    lines = [
        "The service, the PgBouncer processes and the read replicas scale out by adding more of them; two tiers "
        "are one instance each and do not. The rate at which each is full:",
        "",
    ]
    lines += [f"- {tier}: {_n(rate)} req/s (half of it: {_n(rate / 2)} req/s)." for tier, rate in order]
    first = order[0][0]
    lines += ["", f"**{first} saturates first.**"]
    if "primary" in first:
        lines.append(
            "Past it, writes need a bigger primary (the capacity grows about with its cores: `--db-cores`), fewer "
            "statements per write, or partitioning the data across primaries; read replicas do not take writes."
        )
        lines.append(
            f"The primary's line is the plan's weakest figure: {p.m.write_source}, scaled per core. `make bench` runs "
            "only the list scenarios under NullCache; a comment_write run under NullCache, or a `pgbench` of the "
            "write statements on the database host, would replace it with PostgreSQL's own rate."
        )
    return lines


REDIS_CLUSTER = """\
## Past one Redis

One Redis runs commands on one thread; more throughput means more instances. Sentinel adds failover, not
throughput. Two ways past one instance:

- **Redis Cluster**: 16384 hash slots over several masters; throughput grows about with the number of
  masters. A multi-key command or script must touch keys of one slot only, and a script must receive every
  key it touches in `KEYS`.
- **Sharding the cache keys across instances** in the client (by key family or by a hash of the key).

**The cache module supports neither today.** `READ_SCRIPT` (`service/caching/scripts.py`) builds the
versioned key name, the viewer's set names and the counts' small-entry names inside the script
(`ARGV[1] .. ':' .. table.concat(gens, '.')`) and `GET` it there: a key not passed in `KEYS`, which Redis
Cluster refuses (the script's own comment says it is fine on a single Redis only). The generations a
lookup reads (`epoch`, `lists`, `tags`, `article:<slug>`, ...) hash to different slots, and one
`BUMP_SCRIPT` call sets several of them at once. The rate-limit counters, the read-your-writes positions
(`rw:<user>`) and the idempotency keys are single-key operations and would move as they are.

What would change: put every generation and its LSN floor under one hash tag (`g:{gen}:lists`,
`f:{gen}:lists`) so the lookup script reads them in one slot, return the generations from the script, and
`GET` the versioned value key (spread over the slots as usual) in a second round trip; a bump stays one
script on the `{gen}` slot. That costs one more round trip per read (Redis round trips per hit go from 1 to
2), and the `{gen}` slot's master takes one call per request: bounded, but the hot spot to watch. Until
the plan above reaches the Redis line, one Redis with a replica and Sentinel is enough.

That line comes early: measured, the read script costs Redis 36-62 us of CPU per call (a page's header
decoded, its count generations and the viewer's sets read), so one Redis serves about 24k of this
service's round trips per second and is the first tier to fill. An anonymous read already decodes only
the counts of the header (43.5 -> 36.3 us); the next step before a cluster would be a lighter signed-in
read (its flags' ids are decoded whole) and fewer count generations per page.
"""


def render(p: Plan) -> str:
    """The whole of docs/capacity.md for `p`."""
    steps = ", ".join(_rate(s.rate) for s in p.steps)
    lines = [
        "# Capacity plan",
        "",
        "<!-- Generated by `make capacity` (bench/capacity.py) from the run named below; do not edit by hand:",
        "     tests/unit/test_capacity.py checks it is what the script writes. -->",
        "",
        f"How many cores, replicas, connections, database servers and Redis instances the service needs at {steps} "
        "requests/s, computed from a benchmark run on one machine and scaled per core. To plan from your "
        "own hardware run `make bench` there (it writes `bench/results/latest.json`), then "
        "`make capacity CAPACITY_ARGS='--run bench/results/latest.json'`; "
        "`.venv/bin/python -m bench.capacity --help` lists every option (`--mix 80/20`, `--hit-ratio 0.95`, "
        "`--db-cores 16`, `--redis-ops 150000`, ...).",
        "",
        "## The run it comes from",
        "",
        *_source(p),
        "",
        "## The plan",
        "",
        *_table(p),
        "",
        *_ceilings(p),
        "",
        "## Method and assumptions",
        "",
        *_method(p),
        "",
        "The figures are as good as the run: one machine, the load generator on the same cores, the benchmark's "
        "dataset (1,000 articles, 100 users), rate limits off (the plan adds their Redis calls). Read the cores as "
        "an upper bound and the database capacities as lower bounds, and measure again on the hardware you "
        "deploy.",
        "",
        REDIS_CLUSTER,
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
