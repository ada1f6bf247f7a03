"""The benchmark's parsing and ratios (bench/scenarios.py, bench/report.py) on captured wrk output; no processes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.common import BenchError, Settings
from bench.report import runs_with_shares, shares, table
from bench.scenarios import RunResult, counter_total, get_requests, parse_wrk, result_of

# `wrk --latency --script=bench/wrk/ceiling.lua` against the bare app under `-k gevent`, as printed.
LUA_OUTPUT = """\
Running 2s test @ http://127.0.0.1:18731/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    36.26ms   52.36ms 290.50ms   84.30%
    Req/Sec     1.59k     0.86k    3.53k    80.00%
  Latency Distribution
     50%    4.03ms
     75%   60.24ms
     90%  115.37ms
     99%  219.54ms
  3176 requests in 2.01s, 1.06MB read
Requests/sec:   1582.63
Transfer/sec:    542.56KB
BENCH_RESULT {"requests":3176,"duration_us":2006784,"bytes":1114927,\
"latency_us":{"p50":4029,"p90":115367,"p99":219545,"mean":36262.1,"max":290502},\
"non2xx":0,"statuses":{"200":3176},"socket_errors":{"connect":0,"read":0,"write":0,"timeout":0}}
"""

# The same without a script (wrk's own text only); the last two lines are wrk's own format
# (src/wrk.c) for a run with failures, added to the captured output.
PLAIN_OUTPUT = """\
Running 2s test @ http://127.0.0.1:18731/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    51.21ms   67.13ms 274.94ms   81.32%
    Req/Sec     1.08k   304.49     2.19k    90.00%
  Latency Distribution
     50%    2.90ms
     75%   94.42ms
     90%  159.40ms
     99%  233.78ms
  2163 requests in 2.01s, 741.57KB read
  Socket errors: connect 0, read 3, write 1, timeout 12
  Non-2xx or 3xx responses: 41
Requests/sec:   1073.95
Transfer/sec:    368.20KB
"""

METRICS = """\
# HELP conduit_cache_hits_total Shared-cache reads that found a value.
# TYPE conduit_cache_hits_total counter
conduit_cache_hits_total 1500.0
conduit_cache_hits_created 1.7e9
conduit_cache_fastpath_total{worker="1"} 600.0
conduit_cache_fastpath_total{worker="2"} 400.0
conduit_cache_hits_total_other 7.0
conduit_http_requests_total{endpoint="/api/articles",method="GET",status="200"} 900.0
conduit_http_requests_total{endpoint="/api/articles/<slug>/comments",method="POST",status="200"} 100.0
conduit_http_requests_total{endpoint="/api/tags",method="GET",status="304"} 50.0
conduit_http_requests_total{endpoint="/metrics",method="GET",status="200"} 2.0
"""


def settings(scenarios: list[str]) -> Settings:
    return Settings(
        duration=3,
        scenarios=scenarios,
        connections=[64, 256],
        workers=2,
        threads=1,
        timeout=5,
        warmup=0,
        nullcache=False,
        admin_url="postgresql://x",
        redis_url="redis://x",
        out=Path("."),
    )


def run(server: str, scenario: str, connections: int, rps: float, **fields: object) -> RunResult:
    result = RunResult(
        server, scenario, connections, int(rps * 3), 3.0, rps, 1.0, 2.0, 3.0, 1.5, 9.0, 0, {"200": int(rps * 3)}, {}
    )
    for name, value in fields.items():
        setattr(result, name, value)
    return result


def test_the_bench_result_line_of_our_scripts_wins_over_the_text() -> None:
    raw = parse_wrk(LUA_OUTPUT)
    r = result_of(raw, "reference", "reference", 16)
    assert (r.requests, r.duration_s, r.rps) == (3176, 2.007, 1582.6)
    assert (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) == (4.029, 115.367, 219.545, 290.502)
    assert (r.errors, r.http_errors, r.timeouts) == (0, 0, 0)


def test_wrk_text_with_latency_is_parsed_when_there_is_no_bench_result_line() -> None:
    r = result_of(parse_wrk(PLAIN_OUTPUT), "ceiling", "ceiling", 16)
    assert r.requests == 2163
    assert r.duration_s == 2.01
    assert (r.p50_ms, r.p90_ms, r.p99_ms) == pytest.approx((2.90, 159.40, 233.78))
    assert r.mean_ms == pytest.approx(51.21)
    assert r.max_ms == pytest.approx(274.94)
    assert r.statuses == {"2xx/3xx": 2122, "4xx/5xx": 41}
    assert (r.http_errors, r.connection_errors, r.timeouts, r.errors) == (41, 4, 12, 57)


def test_an_output_without_a_summary_is_refused() -> None:
    with pytest.raises(BenchError, match="not a wrk --latency output"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_redirects_are_not_errors_but_client_and_server_errors_are() -> None:
    r = run("cache", "mix", 64, 100, statuses={"200": 290, "301": 3, "404": 2, "503": 5}, non2xx=10)
    r.socket_errors = {"connect": 1, "read": 0, "write": 0, "timeout": 4}
    assert (r.http_errors, r.connection_errors, r.timeouts, r.errors) == (7, 1, 4, 12)
    data = r.as_dict()
    assert (data["http_errors"], data["timeouts"], data["errors"]) == (7, 4, 12)


def test_counters_are_summed_over_their_samples_and_only_theirs() -> None:
    assert counter_total(METRICS, "conduit_cache_hits_total") == 1500.0
    assert counter_total(METRICS, "conduit_cache_fastpath_total") == 1000.0
    assert counter_total(METRICS, "conduit_cache_misses_total") is None
    assert get_requests(METRICS) == 950.0  # the writes and the scrapes of /metrics left out


def test_cache_shares_are_per_request_wrk_made() -> None:
    r = run("cache", "anon_list", 64, 1000, cache_hits=2700, cache_fastpath=1500)
    assert (r.cached_share, r.fastpath_share) == (0.9, 0.5)
    assert run("ceiling", "ceiling", 64, 1000).cached_share is None


def test_the_mixs_cached_share_is_per_read_served() -> None:
    r = run("cache", "mix", 64, 1000, cache_hits=2646, cache_fastpath=2000, reads=2700)
    assert r.cached_read_share == pytest.approx(0.98) and r.cached_share == pytest.approx(0.882)
    assert r.as_dict()["cached_read_share"] == pytest.approx(0.98)


def test_each_scenario_is_a_share_of_both_bare_runs_at_its_connection_count() -> None:
    results = [
        run("reference", "reference", 64, 2000),
        run("reference", "reference", 256, 1000),
        run("ceiling", "ceiling", 64, 1600),
        run("cache", "anon_list", 64, 800, cache_hits=2160, cache_fastpath=2160),
        run("cache", "anon_list", 256, 500),
    ]
    assert shares(results[3], results) == {"share_of_reference": 0.4, "share_of_ceiling": 0.5}
    assert shares(results[4], results) == {"share_of_reference": 0.5, "share_of_ceiling": None}
    assert runs_with_shares(results)[2]["share_of_reference"] == 0.8

    lines = table(results, settings(["anon_list"])).splitlines()
    header, *rows = (re.split(r"\s{2,}", line.strip()) for line in lines[:1] + lines[2:])
    assert header[-5:] == ["% ref", "% ceil", "cached", "fast", "NullCache req/s"]
    by_row = {(row[0], row[1]): dict(zip(header, row, strict=True)) for row in rows}
    assert [name for name, _ in by_row] == ["reference (stock gevent)"] * 2 + ["ceiling (service worker)"] + [
        "anon_list"
    ] * 2
    pick = ("% ref", "% ceil", "cached", "fast")
    assert [by_row["anon_list", "64"][c] for c in pick] == ["40%", "50%", "90%", "90%"]
    assert [by_row["anon_list", "256"][c] for c in pick] == ["50%", "-", "-", "-"]
    assert [by_row["ceiling (service worker)", "64"][c] for c in pick] == ["80%", "100%", "-", "-"]


def test_the_haproxy_pass_is_asked_for_by_flag_or_environment_and_labelled_in_the_table(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.report import table
    from bench.run import parse_args

    monkeypatch.delenv("BENCH_HAPROXY", raising=False)
    assert parse_args([]).haproxy is False
    assert parse_args(["--haproxy"]).haproxy is True
    monkeypatch.setenv("BENCH_HAPROXY", "1")
    assert parse_args([]).haproxy is True
    rows = table([run("cache", "tags", 64, 900), run("haproxy", "tags", 64, 600)], settings(["tags"]))
    assert "tags via HAProxy" in rows and rows.count("tags") == 2
