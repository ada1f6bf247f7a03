"""The capacity plan (bench/capacity.py): its arithmetic on a hand-made run, and docs/capacity.md kept in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import capacity
from bench.capacity_doc import render


def _run(server: str, scenario: str, rps: float, connections: int = 64, failures: int = 0, **extra):
    return {
        "server": server,
        "scenario": scenario,
        "connections": connections,
        "rps": rps,
        "failures": failures,
        **extra,
    }


def hand_made(new_format: bool = False) -> dict:
    """2 cores, 2 workers; the mix at 1,000 req/s with 80% of reads cached; reads 2,000, uncached 500, writes 500."""
    hit = {"cached_share": 0.72} if new_format else {"cache_hit_ratio": 0.8}
    runs = [
        _run("cache", "mix", 1000.0, **hit),
        _run("cache", "mix", 1200.0, connections=256, failures=3, **hit),  # faster, but it failed requests
        *(_run("cache", s, 2000.0) for s in capacity.MIX_READS),
        *(_run("nullcache", s, 500.0) for s in ("anon_list", "auth_list", "feed")),
        _run("cache", "comment_write", 500.0),
    ]
    return {
        "generated_at": "2026-01-02T03:04:05+00:00",
        "machine": {
            "nproc": 2,
            "cpus_usable": 2,
            "cpu_model": "Test CPU",
            "git_commit": "abcdef0123",
            "git_dirty": False,
        },
        "settings": {"gunicorn_workers": 2},
        "runs": runs,
    }


def test_the_plan_of_a_hand_made_run_has_the_expected_numbers():
    m = capacity.measured(hand_made(), "run.json")
    assert (m.cores, m.workers, m.mix_rps, m.mix_connections, m.hit_ratio) == (2, 2, 1000.0, 64, 0.8)
    plan = capacity.plan(m, capacity.Assumptions(), rates=(10_000,))
    step = plan.steps[0]
    assert plan.cost_core_s == pytest.approx(0.002)
    assert step.cores == 34  # 10,000 x 0.002 / 0.6 = 33.3
    assert step.replicas == 18  # 34 / 2 cores + 1 spare
    assert step.client_connections == 18 * 2 * 25  # replicas x workers x (10 + 5 + 2 x 5)
    assert step.writes == pytest.approx(1_000)
    assert step.uncached_reads == pytest.approx(1_800)  # 10,000 x 0.9 x 0.2
    assert step.viewer_statements == pytest.approx(1_000)  # 1,000 writes x 0.5 favorites x 2
    assert plan.replica_reads == pytest.approx(2_000)  # 500 / 2 cores x 8
    assert step.read_replicas == 2
    assert plan.primary_writes == pytest.approx(2_000)
    assert step.primary_pool == 10  # 2 x 1,000 writes/s x 5 ms
    assert step.replica_pool == 6  # 2 x 2,800 statements/s x 1 ms
    assert step.pgbouncer_processes == 1
    # 0.9 x (0.8 x 1 + 0.2 x (3 + 1 + 4/6)) + 0.1 x (1 + 2)
    assert plan.redis_per_request == pytest.approx(1.86)
    assert step.redis_ops == pytest.approx(18_600)
    assert plan.ceilings["PostgreSQL primary (writes)"] == pytest.approx(20_000)
    assert plan.ceilings["Redis (one instance)"] == pytest.approx(24_000 / 1.86)
    assert step.tiers == pytest.approx({"PostgreSQL primary (writes)": 0.5, "Redis (one instance)": 18_600 / 24_000})


def test_the_newer_format_gives_the_hit_ratio_per_read_from_cached_share():
    m = capacity.measured(hand_made(new_format=True), "run.json")
    assert m.hit_ratio == pytest.approx(0.8)  # 0.72 cached responses per request / 0.9 reads


def test_another_hit_ratio_scales_the_measured_cost_by_the_scenario_model():
    m = capacity.measured(hand_made(), "run.json")
    plan = capacity.plan(m, capacity.Assumptions(hit_ratio=1.0), rates=(10_000,))
    # model cost (core-s): 2 x (0.9 x (hit / 2,000 + (1 - hit) / 500) + 0.1 / 500): 0.0013 at 1.0, 0.00184 at 0.8
    assert plan.cost_core_s == pytest.approx(0.002 * 0.0013 / 0.00184)
    assert plan.steps[0].uncached_reads == 0


def test_a_run_without_a_mix_is_refused_with_a_reason():
    data = hand_made()
    data["runs"] = [r for r in data["runs"] if r["scenario"] != "mix"]
    with pytest.raises(capacity.CapacityError, match="mix"):
        capacity.measured(data, "run.json")


def test_the_default_run_is_the_newest_recorded_one_with_a_mix(tmp_path: Path):
    newer_without_mix = {"generated_at": "2026-02-01T00:00:00+00:00", "runs": [{"scenario": "anon_list"}]}
    older = dict(hand_made(), generated_at="2025-12-01T00:00:00+00:00")
    (tmp_path / "a.json").write_text(json.dumps(hand_made()))
    (tmp_path / "b.json").write_text(json.dumps(older))
    (tmp_path / "c.json").write_text(json.dumps(newer_without_mix))
    (tmp_path / "d.json").write_text(json.dumps({"generated_at": "2027-01-01", "recommendation": {}}))
    assert capacity.default_run(tmp_path).name == "a.json"


def test_docs_capacity_md_is_what_make_capacity_writes_from_the_default_run():
    plan = capacity.plan(capacity.load(capacity.default_run()), capacity.Assumptions())
    assert plan.m.source.startswith("bench/recorded/")
    assert capacity.DOC.read_text() == render(plan), "docs/capacity.md is out of date: run `make capacity`"


def test_the_plan_names_its_run_and_says_the_cache_is_not_cluster_ready():
    text = capacity.DOC.read_text()
    assert "`bench/recorded/" in text and "recorded 20" in text and "CPUs" in text
    assert "supports neither today" in text and "KEYS" in text


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        capacity.main(["--help"])
    assert exit_.value.code == 0
    assert "make capacity" in capsys.readouterr().out
