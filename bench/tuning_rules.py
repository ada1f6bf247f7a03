"""The rules of `python -m bench.tune` on given numbers: pools, the PostgreSQL budget, the pick, the table.

Pure: no database, no server, no clock; tests/unit/test_tune.py checks them. The command is
bench/tune.py, the measuring half bench/sweep.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

# Per-worker connection peak of the shipped defaults: 10 reads + 5 writes + 2 x 5 overflow.
DEFAULT_PEAK = 25
# Below this a worker cannot read and write at the same time with any slack: 2 reads + 1 write.
MIN_PEAK = 3


@dataclass(frozen=True)
class Pool:
    """DB pools of one worker; `peak` is what it may open: reads + writes + 2 x overflow."""

    reads: int
    writes: int
    overflow: int

    @property
    def peak(self) -> int:
        return self.reads + self.writes + 2 * self.overflow

    def env(self) -> dict[str, str]:
        return {
            "DB_POOL_SIZE": str(self.reads),
            "DB_WRITE_POOL_SIZE": str(self.writes),
            "DB_MAX_OVERFLOW": str(self.overflow),
        }

    def __str__(self) -> str:
        return f"{self.reads}+{self.writes}+2x{self.overflow}"


def pool_for(worker_connections: int, share: int, cap: int = DEFAULT_PEAK) -> Pool | None:
    """The pools that follow from WORKER_CONNECTIONS: None when the budget leaves under MIN_PEAK.

    A worker's peak is min(worker_connections, cap, share): no more connections than greenlets
    that could hold one, no more than `cap` (one worker runs one greenlet at a time on one core,
    so past a couple of dozen in-flight statements the worker's CPU is the queue, not the pool),
    and no more than its share of the PostgreSQL budget. The peak is split like the defaults:
    a fifth each for writes and for the overflow (counted twice: both pools may overflow), the
    rest for reads.
    """
    peak = min(worker_connections, cap, share)
    if peak < MIN_PEAK:
        return None
    overflow = peak // 5
    writes = max(1, peak // 5)
    return Pool(reads=peak - writes - 2 * overflow, writes=writes, overflow=overflow)


@dataclass(frozen=True)
class Budget:
    """PostgreSQL connections the service may use: max_connections - reserved - headroom."""

    max_connections: int
    reserved: int  # superuser_reserved_connections (+ reserved_connections on PostgreSQL 16+)
    headroom: int
    replicas: int

    @property
    def available(self) -> int:
        return self.max_connections - self.reserved - self.headroom

    def share(self, workers: int) -> int:
        """Connections each worker may open when every replica runs `workers` workers."""
        return max(0, self.available) // (self.replicas * workers)

    def describe(self) -> str:
        return (
            f"{self.available} available = max_connections {self.max_connections} - {self.reserved} reserved"
            f" - {self.headroom} headroom"
        )


@dataclass
class Trial:
    """One setting of the sweep and what the benchmark measured for it."""

    workers: int
    worker_connections: int
    pool: Pool | None
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    requests: int = 0
    non2xx: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    socket_errors: dict[str, int] = field(default_factory=dict)
    probes: int = 0  # fresh connections opened during the run (GET /healthz) ...
    probe_failures: int = 0  # ... and those not answered within the timeout
    probe_max_ms: float = 0.0
    error: str | None = None

    @property
    def name(self) -> str:
        return f"{self.workers}w x {self.worker_connections}"

    @property
    def measured(self) -> bool:
        return self.requests > 0

    @property
    def rejection(self) -> str | None:
        """Why this setting cannot be recommended, or None."""
        if self.pool is None:
            return f"over budget: fewer than {MIN_PEAK} connections per worker fit"
        if self.error:
            return self.error
        failed = sum(self.socket_errors.values())
        if self.non2xx or failed:
            bad = ", ".join(f"{n} x {code}" for code, n in self.statuses.items() if not code.startswith("2"))
            socket = ", ".join(f"{n} {kind}" for kind, n in self.socket_errors.items() if n)
            return "failed requests: " + "; ".join(
                part
                for part in (
                    self.non2xx and f"{self.non2xx} non-2xx ({bad})",
                    failed and f"{failed} socket errors ({socket})",
                )
                if part
            )
        if self.probe_failures:
            return (
                f"{self.probe_failures} of {self.probes} new connections not answered: every greenlet was held"
                " by a client connection (WORKER_CONNECTIONS x workers < clients)"
            )
        if not self.requests:
            return "no request completed"
        return None

    def env(self) -> dict[str, str]:
        assert self.pool is not None
        return {"WEB_CONCURRENCY": str(self.workers), "WORKER_CONNECTIONS": str(self.worker_connections)} | (
            self.pool.env()
        )


def plan(workers: Iterable[int], connections: Iterable[int], budget: Budget, cap: int) -> list[Trial]:
    """Every workers x worker_connections setting with its pools (None when over budget)."""
    return [
        Trial(w, c, pool_for(c, budget.share(w), cap)) for w in sorted(set(workers)) for c in sorted(set(connections))
    ]


def recommend(trials: list[Trial], tolerance: float) -> tuple[Trial | None, list[str]]:
    """Pick a setting by the rule below; return it (None if all were rejected) and the reasoning.

    1. reject settings that failed a request (non-2xx, socket error, timeout), left a new connection
       unanswered (the probe), or exceed the budget;
    2. keep those within `tolerance` of the best throughput;
    3. of those, keep the ones within `tolerance` of the lowest p99;
    4. prefer fewer workers, then fewer DB connections per worker, then more worker_connections.
    """
    reasons = [f"rejected {t.name}: {t.rejection}" for t in trials if t.rejection]
    ok = [t for t in trials if not t.rejection]
    if not ok:
        reasons.append(
            "no setting ran without errors within the budget: lower --clients, or add cores, replicas or connections"
        )
        return None, reasons
    best = max(ok, key=lambda t: t.rps)
    fast = [t for t in ok if t.rps >= (1 - tolerance) * best.rps]
    reasons.append(f"best throughput {best.rps:,.0f} req/s ({best.name}); within {tolerance:.0%} of it: {_names(fast)}")
    lowest = min(t.p99_ms for t in fast)
    calm = [t for t in fast if t.p99_ms <= (1 + tolerance) * lowest]
    reasons.append(f"lowest p99 among them {lowest:,.1f} ms; within {tolerance:.0%} of it: {_names(calm)}")
    chosen = min(calm, key=lambda t: (t.workers, t.pool.peak if t.pool else 0, -t.worker_connections))
    if len(calm) > 1:
        reasons.append(f"then fewest workers, fewest DB connections per worker, most worker_connections: {chosen.name}")
    if len({t.workers for t in trials}) > 1 and best.workers == max(t.workers for t in trials):
        reasons.append("the best throughput came from the most workers swept: try more with --workers")
    return chosen, reasons


def _names(trials: list[Trial]) -> str:
    return ", ".join(t.name for t in trials)


def budget_lines(chosen: Trial, budget: Budget) -> list[str]:
    """The connection arithmetic of the chosen setting, for the report."""
    assert chosen.pool is not None
    pool, total = chosen.pool, budget.replicas * chosen.workers * chosen.pool.peak
    fits = budget.available // (chosen.workers * pool.peak)
    return [
        f"PostgreSQL budget: {budget.replicas} replica(s) x {chosen.workers} worker(s) x {pool.peak} "
        f"({pool.reads} reads + {pool.writes} writes + 2 x {pool.overflow} overflow) = {total} "
        f"<= {budget.describe()}",
        f"with these pools up to {fits} replica(s) of {chosen.workers} worker(s) fit the budget",
    ]


def table(trials: list[Trial], chosen: Trial | None, budget: Budget) -> str:
    header = (
        "workers",
        "worker_conns",
        "pools r+w+2xo",
        "DB conns",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "stuck",
        "verdict",
    )
    rows = []
    for t in trials:
        peak = t.pool.peak if t.pool else 0
        verdict = "RECOMMENDED" if t is chosen else ("rejected" if t.rejection else "ok")
        rows.append(
            (
                str(t.workers),
                str(t.worker_connections),
                str(t.pool) if t.pool else "-",
                f"{budget.replicas * t.workers * peak}/{budget.available}" if t.pool else "over",
                f"{t.rps:,.0f}" if t.measured else "-",
                f"{t.p50_ms:.1f}" if t.measured else "-",
                f"{t.p99_ms:.1f}" if t.measured else "-",
                str(t.non2xx + sum(t.socket_errors.values())) if t.measured else "-",
                f"{t.probe_failures}/{t.probes}" if t.measured else "-",
                verdict,
            )
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(trials: list[Trial], budget: Budget, tolerance: float) -> tuple[Trial | None, str]:
    """The table, the recommendation with its reasoning and env vars, as printed."""
    chosen, reasons = recommend(trials, tolerance)
    lines = [table(trials, chosen, budget), "", "Reasoning:", *(f"  - {r}" for r in reasons), ""]
    if chosen is None:
        lines.append("NO RECOMMENDATION: every setting was rejected (see above).")
    else:
        lines += [f"Recommendation: {chosen.name}", *(f"  {line}" for line in budget_lines(chosen, budget))]
        lines += ["  set: " + " ".join(f"{k}={v}" for k, v in chosen.env().items())]
    return chosen, "\n".join(lines)
