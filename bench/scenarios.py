"""The wrk scenarios (Lua scripts in bench/wrk/): installing wrk, one run, its parsed result, a scenario's runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import WRK_DIR, BenchError, Settings, log
from bench.servers import Server
from bench.stores import RedisStats


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


@dataclass
class RunResult:
    server: str  # "ceiling", "cache" or "nullcache"
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
    cache_hits: int
    cache_misses: int

    @property
    def socket_error_total(self) -> int:
        return sum(self.socket_errors.values())

    @property
    def cache_hit_ratio(self) -> float | None:
        total = self.cache_hits + self.cache_misses
        return self.cache_hits / total if total else None

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["socket_errors_total"] = self.socket_error_total
        data["failures"] = self.non2xx + self.socket_error_total
        data["cache_hit_ratio"] = self.cache_hit_ratio
        return data


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
        f"--script={WRK_DIR / (script + '.lua')}",
        base_url + "/",
    ]
    env = {**os.environ, "BENCH_DATA_DIR": str(data_dir), "BENCH_WRK_DIR": str(WRK_DIR)}
    proc = subprocess.run(  # noqa: S603 - fixed argv, no shell
        cmd, env=env, capture_output=True, text=True, check=False, timeout=duration + settings.timeout + 60
    )
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return dict(json.loads(line.removeprefix("BENCH_RESULT ")))
    raise BenchError(
        f"wrk gave no result for {script} (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    )


class Runner:
    def __init__(self, settings: Settings, wrk: str, redis_stats: RedisStats, data_dir: Path) -> None:
        self.settings = settings
        self.wrk = wrk
        self.redis = redis_stats
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
            hits0, misses0 = self.redis.counters()
            raw = run_wrk(self.wrk, s, server.base_url, script, connections, s.duration, self.data_dir)
            hits1, misses1 = self.redis.counters()
            latency = raw["latency_us"]
            duration_s = raw["duration_us"] / 1e6
            result = RunResult(
                server=kind,
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
                cache_hits=hits1 - hits0,
                cache_misses=misses1 - misses0,
            )
            self.results.append(result)
            ratio = result.cache_hit_ratio
            log(
                f"    {result.rps:9.1f} req/s  p99 {result.p99_ms:7.1f} ms  non-2xx {result.non2xx}"
                f"  socket errors {result.socket_error_total}"
                f"  cache {'n/a' if ratio is None else f'{ratio:.0%}'}"
            )
