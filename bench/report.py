"""What a run reports: the machine it ran on, the table, latest.png, and a re-plot from latest.json."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common import ROOT, BenchError, Settings
from bench.scenarios import RunResult


def _cmd_output(cmd: list[str]) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=10, cwd=ROOT)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (proc.stdout or proc.stderr).strip()


def machine_info(wrk: str) -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    mem_kib = re.search(r"^MemTotal:\s+(\d+)", meminfo, re.M)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    versions: dict[str, str | None] = {}
    for package in ("gunicorn", "gevent", "greenlet", "Flask", "Werkzeug", "SQLAlchemy", "psycopg2-binary", "redis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    git = shutil.which("git")
    commit = _cmd_output([git, "rev-parse", "HEAD"]) if git else ""
    dirty = bool(_cmd_output([git, "status", "--porcelain"])) if git else None
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_mib": int(mem_kib.group(1)) // 1024 if mem_kib else None,
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "wrk": _cmd_output([wrk, "-v"]).splitlines()[0] if _cmd_output([wrk, "-v"]) else None,
        "versions": versions,
        "git_commit": commit or None,
        "git_dirty": dirty,
    }


# The bare WSGI app of bench/ceiling.py, measured in every run under two workers: server label -> meaning.
BARE = {
    "reference": "bare WSGI, fixed 200-byte JSON, gunicorn's stock gevent worker (-k gevent)",
    "ceiling": "bare WSGI, fixed 200-byte JSON, the service's worker (service.runtime.worker.GeventWorker)",
}
BARE_LABELS = {"reference": "reference (stock gevent)", "ceiling": "ceiling (service worker)"}


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def shares(result: RunResult, results: list[RunResult]) -> dict[str, float | None]:
    """`result`'s req/s as a share of each bare run's at the same connection count (None if not measured)."""
    out: dict[str, float | None] = {}
    for bare in BARE:
        base = next((r.rps for r in results if r.server == bare and r.connections == result.connections), None)
        out[f"share_of_{bare}"] = round(result.rps / base, 4) if base else None
    return out


def runs_with_shares(results: list[RunResult]) -> list[dict[str, Any]]:
    """The runs of latest.json: every measured field, the error counts and the shares of both bare runs."""
    return [r.as_dict() | shares(r, results) for r in results]


def table(results: list[RunResult], settings: Settings) -> str:
    nullcache = {(r.scenario, r.connections): r for r in results if r.server == "nullcache"}
    header = (
        "scenario",
        "conns",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "http err",
        "sock err",
        "t/o",
        "% ref",
        "% ceil",
        "cached",
        "fast",
        "NullCache req/s",
    )
    rows: list[tuple[str, ...]] = []
    for scenario in [*BARE, *settings.scenarios]:
        for r in results:
            if r.scenario != scenario or r.server == "nullcache":
                continue
            share = shares(r, results)
            nc = nullcache.get((r.scenario, r.connections))
            rows.append(
                (
                    BARE_LABELS.get(scenario, scenario) + (" via HAProxy" if r.server == "haproxy" else ""),
                    str(r.connections),
                    f"{r.rps:,.0f}",
                    f"{r.p50_ms:.1f}",
                    f"{r.p90_ms:.1f}",
                    f"{r.p99_ms:.1f}",
                    str(r.http_errors),
                    str(r.connection_errors),
                    str(r.timeouts),
                    _fmt_ratio(share["share_of_reference"]),
                    _fmt_ratio(share["share_of_ceiling"]),
                    _fmt_ratio(r.cached_read_share if r.cached_read_share is not None else r.cached_share),
                    _fmt_ratio(r.fastpath_share),
                    "-" if nc is None else f"{nc.rps:,.0f}",
                )
            )
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True)))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append(
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(lines)


def plot(results: list[RunResult], settings: Settings, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bare_measured = [b for b in BARE if any(r.server == b for r in results)]
    scenarios = [*bare_measured, *settings.scenarios]
    series: list[tuple[str, str, int]] = [("cache", "", c) for c in settings.connections]
    series += [("nullcache", "//", c) for c in settings.connections if any(r.server == "nullcache" for r in results)]
    lookup = {(r.server if r.server not in BARE else "cache", r.scenario, r.connections): r for r in results}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    service_rps = [r.rps for r in results if r.server not in BARE]
    ceiling_rps = [r.rps for r in results if r.server in BARE]
    # A ceiling far above the service would flatten every other bar: clip it and print its value.
    clip = 1.35 * max(service_rps) if service_rps and ceiling_rps and max(ceiling_rps) > 3 * max(service_rps) else None

    fig, (ax_rps, ax_p99) = plt.subplots(2, 1, figsize=(max(10, 1.3 * len(scenarios) + 4), 9), sharex=True)
    width = 0.8 / len(series)
    for j, (kind, hatch, connections) in enumerate(series):
        color = colors[settings.connections.index(connections) % len(colors)]
        label = f"c={connections}" + (" NullCache" if kind == "nullcache" else "")
        xs, rps, p99, rps_labels = [], [], [], []
        for i, scenario in enumerate(scenarios):
            r = lookup.get((kind, scenario, connections))
            if r is None:
                continue
            x = i - 0.4 + width * (j + 0.5)
            xs.append(x)
            rps.append(r.rps)
            p99.append(r.p99_ms)
            if clip and r.rps > clip:
                rps_labels.append("")
                ax_rps.text(
                    x, clip * 0.97, f"{r.rps:,.0f} (clipped)", rotation=90, ha="center", va="top", fontsize=7, color="w"
                )
            else:
                ref = None if r.server in BARE else shares(r, results)["share_of_reference"]
                rps_labels.append(f"{r.rps:,.0f}" + ("" if ref is None else f" ({ref:.0%} of ref)"))
        style = {
            "color": color,
            "hatch": hatch,
            "edgecolor": "black" if hatch else color,
            "alpha": 0.55 if hatch else 1,
        }
        bars = ax_rps.bar(xs, rps, width, label=label, **style)
        ax_rps.bar_label(bars, labels=rps_labels, fontsize=7, rotation=90, padding=2)
        bars = ax_p99.bar(xs, p99, width, label=label, **style)
        ax_p99.bar_label(bars, fmt="{:,.0f}", fontsize=7, rotation=90, padding=2)

    ax_rps.set_ylabel("requests / s")
    if clip:
        ax_rps.set_ylim(0, clip)
    else:
        ax_rps.margins(y=0.25)
    ax_p99.set_ylabel("p99 latency, ms")
    ax_p99.margins(y=0.2)
    ax_rps.set_title(title, fontsize=10)
    ax_rps.legend(fontsize=8, ncols=len(series))
    ax_p99.legend(fontsize=8, ncols=len(series))
    for ax in (ax_rps, ax_p99):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    ax_p99.set_xticks(range(len(scenarios)), [BARE_LABELS.get(s, s) for s in scenarios], rotation=30, ha="right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def show(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def render(results: list[RunResult], settings: Settings, info: dict[str, Any]) -> None:
    """Print the table and the failures; draw latest.png."""
    png_path = settings.out / "latest.png"
    title = (
        f"Conduit on {info['nproc']} CPU(s) ({info['cpu_model']}), {settings.workers} gevent workers, "
        f"{settings.duration}s per run; hatched = NullCache; ref = the bare app under stock gevent"
    )
    plot(results, settings, png_path, title)
    print()
    print(table(results, settings))
    print()
    for r in results:
        if r.errors:
            print(
                f"FAILURES {r.server}/{r.scenario} c={r.connections}: statuses {r.statuses}, "
                f"socket errors {r.socket_errors}"
            )
    print(f"wrote {show(png_path)}")


def replot(settings: Settings) -> int:
    path = settings.out / "latest.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read {path}: {exc}") from exc
    fields = set(RunResult.__dataclass_fields__)
    if not any("cached_share" in run for run in report["runs"]):
        fields -= {"cache_hits"}  # an older latest.json: its cache_hits were Redis keyspace hits
    results = [RunResult(**{k: v for k, v in run.items() if k in fields}) for run in report["runs"]]
    saved = report["settings"]
    settings = replace(
        settings,
        duration=saved["duration_s"],
        scenarios=saved["scenarios"],
        connections=saved["connections"],
        workers=saved["gunicorn_workers"],
    )
    render(results, settings, report["machine"])
    return 0
