"""The tuner (`python -m bench.tune`): its rules on given numbers (the real sweep is in tests/bench)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from click.testing import CliRunner

from bench.tune import load_sweep, tune
from bench.tuning_rules import MIN_PEAK, Budget, Pool, Trial, plan, pool_for, recommend, report
from config.settings import BaseConfig

ROOT = Path(__file__).resolve().parents[2]
BUDGET = Budget(max_connections=100, reserved=3, headroom=5, replicas=1)


def measured(workers: int, worker_connections: int, rps: float, p99: float, **fields: object) -> Trial:
    pool = pool_for(worker_connections, BUDGET.share(workers))
    trial = Trial(workers, worker_connections, pool, rps=rps, p50_ms=p99 / 4, p99_ms=p99, requests=int(rps * 10))
    trial.statuses, trial.probes = {"200": trial.requests}, 20
    for name, value in fields.items():
        setattr(trial, name, value)
    return trial


def sweep() -> list[Trial]:
    return [
        measured(1, 100, 1000, 50, probe_failures=5),  # clients never served: looks fast, is broken
        measured(1, 1000, 1500, 80),
        measured(2, 100, 2000, 60, non2xx=3, statuses={"200": 19997, "503": 3}),
        measured(2, 1000, 2050, 70),
        measured(4, 1000, 2100, 72),
    ]


def test_pools_of_a_large_worker_are_the_shipped_defaults() -> None:
    defaults = Pool(BaseConfig.DB_POOL_SIZE, BaseConfig.DB_WRITE_POOL_SIZE, BaseConfig.DB_MAX_OVERFLOW)
    assert pool_for(1000, share=92) == defaults
    assert pool_for(100, share=92) == defaults


def test_pools_never_exceed_greenlets_cap_or_budget_share() -> None:
    for worker_connections in range(1, 40):
        for share in range(40):
            for cap in (MIN_PEAK, 25, 30):
                pool = pool_for(worker_connections, share, cap)
                limit = min(worker_connections, share, cap)
                if limit < MIN_PEAK:
                    assert pool is None
                    continue
                assert pool is not None
                assert pool.peak == limit
                assert pool.reads >= pool.writes >= 1
                assert pool.overflow >= 0


def test_budget_is_max_connections_minus_reserved_minus_headroom_split_over_replicas_and_workers() -> None:
    assert BUDGET.available == 92
    assert (BUDGET.share(1), BUDGET.share(4)) == (92, 23)
    assert Budget(100, 3, 5, replicas=3).share(2) == 15


def test_plan_shrinks_pools_to_fit_and_marks_settings_that_cannot() -> None:
    three = Budget(100, 3, 5, replicas=3)
    trials = {(t.workers, t.worker_connections): t for t in plan([1, 2, 4], [100, 1000], three, cap=25)}
    assert trials[(1, 1000)].pool == Pool(10, 5, 5)
    assert trials[(2, 1000)].pool == Pool(6, 3, 3)
    assert trials[(4, 100)].pool == Pool(4, 1, 1)
    for trial in trials.values():
        assert trial.pool is not None
        assert three.replicas * trial.workers * trial.pool.peak <= three.available
    crowded = plan([1], [100], Budget(100, 3, 5, replicas=40), cap=25)[0]
    assert crowded.pool is None
    assert crowded.rejection is not None and "over budget" in crowded.rejection


def test_recommendation_rejects_failures_then_prefers_fewer_workers_among_equals() -> None:
    trials = sweep()
    chosen, reasons = recommend(trials, tolerance=0.10)
    # 4w (2,100 req/s) is best; 2w x 1000 is within 10% of it, its p99 the lowest: fewer workers win.
    assert chosen is trials[3]
    assert any(r.startswith("rejected 1w x 100") and "new connections not answered" in r for r in reasons)
    assert any(r.startswith("rejected 2w x 100") and "3 x 503" in r for r in reasons)


def test_recommendation_takes_the_best_throughput_when_nothing_is_within_tolerance() -> None:
    chosen, _reasons = recommend(sweep(), tolerance=0.0)
    assert chosen is not None and chosen.workers == 4


def test_recommendation_prefers_lower_p99_over_fewer_workers() -> None:
    slow, fast = measured(1, 1000, 1950, 200), measured(2, 1000, 2000, 60)
    assert recommend([slow, fast], tolerance=0.10)[0] is fast


def test_exact_ties_go_to_fewer_db_connections_then_more_worker_connections() -> None:
    small, medium, large = measured(1, 10, 1000, 50), measured(1, 100, 1000, 50), measured(1, 1000, 1000, 50)
    assert recommend([large, medium, small], tolerance=0.10)[0] is small
    assert recommend([medium, large], tolerance=0.10)[0] is large


def test_no_recommendation_when_every_setting_failed() -> None:
    chosen, reasons = recommend([measured(1, 100, 900, 40, socket_errors={"timeout": 2})], tolerance=0.10)
    assert chosen is None
    assert "2 socket errors (2 timeout)" in reasons[0]


def test_report_gives_the_env_vars_and_the_budget_arithmetic() -> None:
    chosen, text = report(sweep(), BUDGET, tolerance=0.10)
    assert chosen is not None
    assert (
        "set: WEB_CONCURRENCY=2 WORKER_CONNECTIONS=1000 DB_POOL_SIZE=10 DB_WRITE_POOL_SIZE=5 DB_MAX_OVERFLOW=5" in text
    )
    assert "1 replica(s) x 2 worker(s) x 25 (10 reads + 5 writes + 2 x 5 overflow) = 50 <= 92 available" in text
    assert "up to 1 replica(s) of 2 worker(s) fit" in text


def test_replot_reanalyses_a_saved_sweep_through_the_command(tmp_path: Path) -> None:
    saved = {
        "settings": {"scenario": "mix", "clients": 256, "duration_s": 10},
        "machine": {"nproc": 2},
        "budget": asdict(BUDGET),
        "trials": [asdict(t) for t in sweep()],
    }
    (tmp_path / "tune.json").write_text(json.dumps(saved))
    runner = CliRunner()

    result = runner.invoke(tune, ["--replot", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Recommendation: 2w x 1000" in result.output
    assert (tmp_path / "tune.png").read_bytes().startswith(b"\x89PNG")

    result = runner.invoke(tune, ["--replot", "--out", str(tmp_path), "--tolerance", "0"])
    assert "Recommendation: 4w x 1000" in result.output


def test_the_recorded_sweep_still_gives_the_recommendation_in_benchmarks_md() -> None:
    recorded = sorted((ROOT / "bench" / "recorded").glob("*-tune.json"))
    assert recorded, "make tune once and keep its tune.json under bench/recorded/"
    trials, budget, saved = load_sweep(recorded[-1])
    chosen, _text = report(trials, budget, saved["settings"]["tolerance"])
    assert chosen is not None and chosen.env() == saved["recommendation"]
    assert " ".join(f"{k}={v}" for k, v in chosen.env().items()) in (ROOT / "BENCHMARKS.md").read_text()
