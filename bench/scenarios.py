"""The wrk scenarios (Lua scripts in bench/wrk/): installing wrk, one run, its parsed result, a scenario's runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import WRK_DIR, BenchError, Settings, log
from bench.servers import Server


def _run_loud(cmd: list[str]) -> bool:
    log("running: " + " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode == 0  # noqa: S603 - fixed argv, no shell


def ensure_wrk() -> str:
    """Path to wrk, installing it with apt-get when missing."""
    found = shutil.which("wrk")
    if found:
        return found
    apt = shutil.which("apt-get")
    if not apt:
        raise BenchError("wrk is not installed and apt-get is not available: install wrk (https://github.com/wg/wrk)")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if not sudo:
            raise BenchError("wrk is not installed; run `sudo apt-get install -y wrk` (not root, no sudo here)")
        prefix = [sudo, "-n"]
    log("wrk is not installed; installing it with apt-get")
    if not _run_loud([*prefix, apt, "install", "-y", "wrk"]):
        log("apt-get install failed; refreshing the package lists and trying once more")
        if not (_run_loud([*prefix, apt, "update"]) and _run_loud([*prefix, apt, "install", "-y", "wrk"])):
            raise BenchError("could not install wrk with apt-get (see above); install it yourself and retry")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("apt-get reported success but wrk is still not on PATH")
    return found


# What wrk prints (src/wrk.c) when a script has no done() of its own; with `--latency` also the
# distribution at 50/75/90/99%. Our scripts add one BENCH_RESULT line with exact status counts.
_SUMMARY = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h),", re.M)
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.M)
_STATS = re.compile(r"^\s*Latency\s+([\d.]+)(us|ms|s|m|h)\s+\S+\s+([\d.]+)(us|ms|s|m|h)", re.M)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX_3XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def parse_wrk(stdout: str) -> dict[str, Any]:
    """wrk's output as {requests, duration_us, latency_us{p50,p90,p99,mean,max}, statuses, socket_errors}.

    The BENCH_RESULT line of bench/wrk/common.lua when there is one (exact percentiles, every
    status); otherwise wrk's own text, run with `--latency`: its statuses are then only "2xx/3xx"
    and "4xx/5xx" (wrk counts a status of 400 or more as an error, it keeps no other breakdown).
    """
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return dict(json.loads(line.removeprefix("BENCH_RESULT ")))
    summary = _SUMMARY.search(stdout)
    percentiles = {p: float(v) * _US[unit] for p, v, unit in _PERCENTILE.findall(stdout)}
    if summary is None or not {"50", "90", "99"} <= percentiles.keys():
        raise BenchError(f"not a wrk --latency output:\n{stdout[-2000:]}")
    requests = int(summary.group(1))
    stats = _STATS.search(stdout)
    socket = _SOCKET.search(stdout)
    failed = _NON_2XX_3XX.search(stdout)
    bad = int(failed.group(1)) if failed else 0
    return {
        "requests": requests,
        "duration_us": round(float(summary.group(2)) * _US[summary.group(3)]),
        "latency_us": {
            "p50": percentiles["50"],
            "p90": percentiles["90"],
            "p99": percentiles["99"],
            "mean": float(stats.group(1)) * _US[stats.group(2)] if stats else 0.0,
            "max": float(stats.group(3)) * _US[stats.group(4)] if stats else 0.0,
        },
        "non2xx": bad,
        "statuses": {k: v for k, v in (("2xx/3xx", requests - bad), ("4xx/5xx", bad)) if v},
        "socket_errors": dict(
            zip(("connect", "read", "write", "timeout"), map(int, socket.groups() if socket else "0000"), strict=True)
        ),
    }


def counter_total(exposition: str, name: str) -> float | None:
    """The sum of every sample of counter `name` in a Prometheus text exposition; None when absent."""
    total, seen = 0.0, False
    for line in exposition.splitlines():
        if line.startswith(name) and line[len(name) : len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(None, 1)[-1])
            seen = True
    return total if seen else None


def get_requests(exposition: str) -> float:
    """GET requests the service answered (conduit_http_requests_total), those of /metrics left out."""
    total = 0.0
    for line in exposition.splitlines():
        if line.startswith("conduit_http_requests_total{") and 'method="GET"' in line and "/metrics" not in line:
            total += float(line.rsplit(None, 1)[-1])
    return total


def scrape_cache_counters(base_url: str) -> tuple[float, float, float] | None:
    """(conduit_cache_hits_total, conduit_cache_fastpath_total, GET requests) from the server's
    /metrics, or None.

    None for a server without them (the bare WSGI app answers its fixed JSON to any path).
    """
    try:
        with urllib.request.urlopen(base_url + "/metrics", timeout=10) as reply:  # noqa: S310 - our loopback server
            text = reply.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    hits = counter_total(text, "conduit_cache_hits_total")
    fastpath = counter_total(text, "conduit_cache_fastpath_total")
    if hits is None:
        return None
    return hits, fastpath or 0.0, get_requests(text)


def _is_http_error(status: str) -> bool:
    """Not a 2xx or 3xx answer ("4xx/5xx" is wrk's own lump count, see parse_wrk)."""
    if status == "2xx/3xx":
        return False
    return status == "4xx/5xx" or not 200 <= int(status) < 400


@dataclass
class RunResult:
    server: str  # "reference", "ceiling", "cache" or "nullcache"
    scenario: str
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non2xx: int
    statuses: dict[str, int]
    socket_errors: dict[str, int]
    # Deltas of the service's own conduit_cache_hits_total / conduit_cache_fastpath_total over
    # the run (fast-path answers are also counted in hits); None when the server has no /metrics.
    cache_hits: int | None = None
    cache_fastpath: int | None = None
    reads: int | None = None  # GET responses of the run (the service's own count)

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def http_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if _is_http_error(status))

    @property
    def timeouts(self) -> int:
        return self.socket_errors.get("timeout", 0)

    @property
    def connection_errors(self) -> int:
        """connect, read and write errors: the socket errors that are not timeouts."""
        return self.socket_error_total - self.timeouts

    @property
    def errors(self) -> int:
        return self.http_errors + self.socket_error_total

    @property
    def cached_share(self) -> float | None:
        """Cache hits per request wrk made (about the share of responses served from cache)."""
        return self.cache_hits / self.requests if self.cache_hits is not None and self.requests else None

    @property
    def cached_read_share(self) -> float | None:
        """Cache hits per GET the service answered: the share of reads served from cache (the mix's
        writes left out)."""
        return self.cache_hits / self.reads if self.cache_hits is not None and self.reads else None

    @property
    def fastpath_share(self) -> float | None:
        return self.cache_fastpath / self.requests if self.cache_fastpath is not None and self.requests else None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["http_errors"] = self.http_errors
        data["socket_errors_total"] = self.socket_error_total
        data["timeouts"] = self.timeouts
        data["errors"] = self.errors
        data["failures"] = self.errors
        data["cached_share"] = self.cached_share
        data["cached_read_share"] = self.cached_read_share
        data["fastpath_share"] = self.fastpath_share
        return data


def result_of(raw: dict[str, Any], server: str, scenario: str, connections: int) -> RunResult:
    """One run's RunResult from parse_wrk's dict."""
    latency = raw["latency_us"]
    duration_s = raw["duration_us"] / 1e6
    return RunResult(
        server=server,
        scenario=scenario,
        connections=connections,
        requests=int(raw["requests"]),
        duration_s=round(duration_s, 3),
        rps=round(raw["requests"] / duration_s, 1) if duration_s else 0.0,
        p50_ms=latency["p50"] / 1000,
        p90_ms=latency["p90"] / 1000,
        p99_ms=latency["p99"] / 1000,
        mean_ms=round(latency["mean"] / 1000, 3),
        max_ms=latency["max"] / 1000,
        non2xx=int(raw["non2xx"]),
        statuses={str(k): int(v) for k, v in sorted(raw["statuses"].items())},
        socket_errors={k: int(v) for k, v in raw["socket_errors"].items()},
    )


def run_wrk(
    wrk: str, settings: Settings, base_url: str, script: str, connections: int, duration: int, data_dir: Path
) -> dict[str, Any]:
    threads = min(settings.threads, connections)
    cmd = [
        wrk,
        f"--threads={threads}",
        f"--connections={connections}",
        f"--duration={duration}s",
        f"--timeout={settings.timeout}s",
        "--latency",
        f"--script={WRK_DIR / (script + '.lua')}",
        base_url + "/",
    ]
    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir), "BENCH_WRK_DIR": str(WRK_DIR)}
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        cmd, env=env, capture_output=True, text=True, check=False, timeout=duration + settings.timeout + 60
    )
    try:
        return parse_wrk(proc.stdout)
    except BenchError:
        raise BenchError(
            f"wrk gave no result for {script} (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        ) from None


class Runner:
    def __init__(self, settings: Settings, wrk: str, data_dir: Path) -> None:
        self.settings = settings
        self.wrk = wrk
        self.data_dir = data_dir
        self.results: list[RunResult] = []
        self.total_runs = 0
        self.done_runs = 0

    def scenario(self, server: Server, kind: str, scenario: str, script: str | None = None) -> None:
        script = script or scenario
        s = self.settings
        if s.warmup:
            run_wrk(self.wrk, s, server.base_url, script, s.connections[0], s.warmup, self.data_dir)
        for connections in s.connections:
            self.done_runs += 1
            log(f"[{self.done_runs}/{self.total_runs}] {kind:9} {scenario:16} c={connections:<4} {s.duration}s ...")
            before = scrape_cache_counters(server.base_url)
            raw = run_wrk(self.wrk, s, server.base_url, script, connections, s.duration, self.data_dir)
            after = scrape_cache_counters(server.base_url)
            result = result_of(raw, kind, scenario, connections)
            if before is not None and after is not None:
                result.cache_hits = round(after[0] - before[0])
                result.cache_fastpath = round(after[1] - before[1])
                result.reads = round(after[2] - before[2])
            self.results.append(result)
            cached = result.cached_read_share
            log(
                f"    {result.rps:9.1f} req/s  p99 {result.p99_ms:7.1f} ms  errors {result.errors}"
                f" (http {result.http_errors}, socket {result.connection_errors}, timeouts {result.timeouts})"
                f"  cached {'n/a' if cached is None else f'{cached:.0%}'} of reads"
            )
