"""Metrics, request ids and structured logs.

In-process tests use the ordinary (single-process) registry; the live tests run
gunicorn with two workers on PostgreSQL + Redis in prometheus-client's
multiprocess mode and read the server's real log output.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import signal
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from service.runtime import metrics
from service.runtime.logs import AddressList, JsonFormatter, client_address
from tests.conftest import Api, auth, build_app, scratch_database
from tests.live import Server, live_server


def sample(name: str, **labels: str) -> float:
    metrics.flush()  # request and cache counts are written at most once a second
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(scope="module")
def local_app(tmp_path_factory: pytest.TempPathFactory) -> Flask:
    return build_app(f"sqlite:///{tmp_path_factory.mktemp('observability')}/o.db")


@pytest.fixture
def local(local_app: Flask) -> FlaskClient:
    return local_app.test_client()


def test_a_sane_request_id_is_echoed_and_anything_else_replaced(local: FlaskClient) -> None:
    sane = "lb-7f3a:42.x_y"
    assert local.get("/api/tags", headers={"X-Request-Id": sane}).headers["X-Request-Id"] == sane
    for bad in ("", "a" * 129, "has space", "tab\tid", "<script>", "caf\u00e9"):
        echoed = local.get("/api/tags", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert echoed != bad and len(echoed) == 24
    first, second = (local.get("/healthz").headers["X-Request-Id"] for _ in range(2))
    assert first != second


def test_requests_are_counted_by_route_template_never_by_raw_path(local: FlaskClient) -> None:
    slug = f"no-such-{secrets.token_hex(4)}"
    route = {"endpoint": "/api/articles/{slug}", "method": "GET", "status": "404"}
    before = sample("conduit_http_requests_total", **route)
    unmatched = sample("conduit_http_requests_total", endpoint="unmatched", method="GET", status="404")
    local.get(f"/api/articles/{slug}")
    local.get(f"/api/{slug}")
    assert sample("conduit_http_requests_total", **route) == before + 1
    assert sample("conduit_http_requests_total", endpoint="unmatched", method="GET", status="404") == unmatched + 1
    assert sample("conduit_http_request_duration_seconds_count", endpoint="unmatched", method="GET", status="404") >= 1
    exposition = local.get("/metrics").get_data(as_text=True)
    assert slug not in exposition


def test_batched_latencies_land_in_the_same_buckets_as_observe() -> None:
    labels = {"endpoint": f"/test/{secrets.token_hex(3)}", "method": "GET", "status": "200"}
    for seconds in (0.0005, 0.001, 0.003, 0.003, 20.0):
        metrics.observe_request(labels["endpoint"], "GET", 200, seconds)

    def bucket(le: str) -> float:
        return sample("conduit_http_request_duration_seconds_bucket", le=le, **labels)

    assert [bucket(le) for le in ("0.001", "0.0025", "0.005", "10.0", "+Inf")] == [2, 2, 4, 4, 5]
    assert sample("conduit_http_request_duration_seconds_count", **labels) == 5
    assert sample("conduit_http_request_duration_seconds_sum", **labels) == pytest.approx(20.0075)
    assert sample("conduit_http_requests_total", **labels) == 5


def test_a_worker_file_still_being_created_does_not_break_the_scrape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that is booting has created its metrics file but not sized it yet (0 bytes):
    a scrape at that moment must skip it, not answer 500."""
    from prometheus_client import Counter as PromCounter
    from prometheus_client import values

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    values.ValueClass = values.get_value_class()
    try:
        PromCounter("conduit_test_scrape_total", "a counter of a live worker", registry=None).inc()
        (tmp_path / "counter_99999.db").write_bytes(b"")  # another worker, mid-creation
        body = metrics.exposition().decode()
    finally:
        monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR")
        values.ValueClass = values.get_value_class()
    assert "conduit_test_scrape_total 1.0" in body


def test_unknown_methods_share_one_label(local: FlaskClient) -> None:
    before = sample("conduit_http_requests_total", endpoint="unmatched", method="other", status="405")
    local.open("/api/tags", method="BREW")
    local.open("/api/tags", method="XYZZY")
    assert sample("conduit_http_requests_total", endpoint="unmatched", method="other", status="405") == before + 2


def test_cache_hits_and_misses_are_counted(local: FlaskClient) -> None:
    api = Api(local)
    token = api.register(f"c{secrets.token_hex(4)}")
    slug = api.create_article(token, title=f"Counted {secrets.token_hex(4)}")["slug"]
    hits, misses = sample("conduit_cache_hits_total"), sample("conduit_cache_misses_total")
    local.get(f"/api/articles/{slug}")
    assert sample("conduit_cache_misses_total") == misses + 1
    local.get(f"/api/articles/{slug}")
    assert sample("conduit_cache_hits_total") == hits + 1


@pytest.mark.postgres
def test_pool_gauges_show_capacity_and_drop_back_to_zero(pg_app: Flask) -> None:
    client = pg_app.test_client()
    assert client.get("/api/tags").status_code == 200
    assert (
        sample("conduit_db_pool_max_connections", pool="read")
        == pg_app.config["DB_POOL_SIZE"] + pg_app.config["DB_MAX_OVERFLOW"]
    )
    assert (
        sample("conduit_db_pool_max_connections", pool="write")
        == pg_app.config["DB_WRITE_POOL_SIZE"] + pg_app.config["DB_MAX_OVERFLOW"]
    )
    database = pg_app.extensions["db"]
    with database.read():
        assert sample("conduit_db_connections_in_use", pool="read") == 1
        with database.transaction():
            assert sample("conduit_db_connections_in_use", pool="write") == 1
    assert sample("conduit_db_connections_in_use", pool="read") == 0
    assert sample("conduit_db_connections_in_use", pool="write") == 0
    assert sample("conduit_db_requests_waiting", pool="read") == 0


def test_rate_limit_rejections_are_counted_per_scope() -> None:
    before = sample("conduit_rate_limited_total", scope="login_address")
    metrics.record_rate_limited("login_address")
    metrics.record_rate_limited("login_address")
    assert sample("conduit_rate_limited_total", scope="login_address") == before + 2


def test_client_address_believes_forwarded_for_only_from_trusted_proxies() -> None:
    proxies = AddressList("127.0.0.1,10.0.0.0/8", "FORWARDED_ALLOW_IPS")

    def client(peer: str, forwarded: str | None = None) -> str:
        environ = {"REMOTE_ADDR": peer} | ({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded else {})
        return client_address(environ, proxies)

    assert client("203.0.113.9") == "203.0.113.9"
    assert client("203.0.113.9", "1.2.3.4") == "203.0.113.9"  # an untrusted peer's header is ignored
    assert client("127.0.0.1", "1.2.3.4") == "1.2.3.4"
    assert client("127.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.7") == "1.2.3.4"  # a client's own entries are not
    assert client("127.0.0.1", "garbage, 10.0.0.7") == "10.0.0.7"
    assert client("127.0.0.1", "10.0.0.8, 10.0.0.7") == "10.0.0.8"
    assert client("::ffff:127.0.0.1", "2001:db8::1") == "2001:db8::1"
    assert "8.8.8.8" in AddressList("*", "X")


def test_metrics_answer_only_to_allowed_clients(local: FlaskClient) -> None:
    assert local.get("/metrics").status_code == 200  # loopback
    assert local.get("/metrics", environ_base={"REMOTE_ADDR": "192.168.1.20"}).status_code == 200
    assert local.get("/metrics", environ_base={"REMOTE_ADDR": "8.8.8.8"}).status_code == 404
    # Through the (trusted) local proxy: the forwarded client decides.
    assert local.get("/metrics", headers={"X-Forwarded-For": "8.8.8.8"}).status_code == 404
    assert local.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"}).status_code == 200
    # Forwarded by a proxy we do not trust: the real client is unknown.
    refused = local.get("/metrics", headers={"X-Forwarded-For": "10.1.2.3"}, environ_base={"REMOTE_ADDR": "10.9.9.9"})
    assert refused.status_code == 404
    resp = local.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert resp.headers["Cache-Control"] == "no-store"


def test_metrics_allow_is_configurable(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path}/m.db", METRICS_ALLOW="198.51.100.0/24")
    client = app.test_client()
    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "198.51.100.7"}).status_code == 200


def test_unhandled_errors_are_one_json_line_with_the_traceback_and_request_id(tmp_path: Path) -> None:
    app = build_app(f"sqlite:///{tmp_path}/e.db")

    def boom() -> None:
        raise RuntimeError("boom in a view")

    app.add_url_rule("/boom", "boom", boom)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("service")
    logger.addHandler(handler)
    try:
        resp = app.test_client().get("/boom", headers={"X-Request-Id": "trace-500"})
    finally:
        logger.removeHandler(handler)
    assert resp.status_code == 500
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [line for line in lines if line["level"] == "error"]
    assert len(errors) == 1, lines
    error = errors[0]
    assert error["request_id"] == "trace-500"
    assert error["logger"] == "service.api.errors"
    assert "Traceback" in error["exc"] and "RuntimeError: boom in a view" in error["exc"]
    assert isinstance(error["pid"], int) and error["ts"].endswith("Z")


# -- a live server: two workers, multiprocess metrics, real log output -----------------------------


def call(
    base: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, method=method, data=data, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, resp.read(), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, err.read(), err.headers


def scrape(base: str) -> dict[str, list[Any]]:
    status, body, _ = call(base, "GET", "/metrics")
    assert status == 200
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples.setdefault(s.name, []).append(s)
    return samples


def total(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def access_lines(server: Server) -> list[dict[str, Any]]:
    lines = []
    for raw in server.log_path.read_text().splitlines():
        line = json.loads(raw)  # every line the server wrote is JSON
        if line["logger"] == "service.access":
            lines.append(line)
    return lines


def worker_pids(server: Server) -> set[int]:
    children = Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split()
    return {int(pid) for pid in children}


@pytest.fixture(scope="module")
def live(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    prom = tmp_path_factory.mktemp("prometheus")
    (prom / "counter_999999.db").write_bytes(b"stale values of a previous run")
    with (
        scratch_database("conduit_observe") as url,
        live_server(
            url,
            workers=2,
            REDIS_URL=redis_url,
            ACCESS_LOG="-",
            PROMETHEUS_MULTIPROC_DIR=str(prom),
            GEVENT_MONITOR_THREAD_ENABLE="1",
            # 1 ms: the OpenAPI build (a few ms, once per worker) is the test's only block; with a period
            # near its length the monitor thread sometimes missed it on a quiet machine.
            GEVENT_MAX_BLOCKING_TIME="0.001",
            # The tests below count cache errors and expect none: on a loaded machine a Redis answer
            # can take longer than production's 0.1 s budget without anything being wrong.
            CACHE_SOCKET_TIMEOUT="2",
        ) as server,
    ):
        yield server, prom


@pytest.mark.postgres
def test_request_counts_add_up_over_workers(live: tuple[Server, Path]) -> None:
    server, prom = live
    assert not (prom / "counter_999999.db").exists()  # wiped by the master before the workers forked
    endpoint = {"endpoint": "/api/tags", "method": "GET", "status": "200"}
    before = total(scrape(server), "conduit_http_requests_total", **endpoint)
    sent = 0
    for _ in range(
        25
    ):  # until both workers have served some (almost always the first round; a busy machine may need more)
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda _: call(server, "GET", "/api/tags")[0], range(40)))
        assert statuses == [200] * 40
        sent += 40
        served_by = Counter(line["pid"] for line in access_lines(server) if line["endpoint"] == "/api/tags")
        if len(served_by) >= 2:
            break
    assert len(served_by) == 2, served_by
    # Each worker writes its counts at least once a second; then whichever worker answers
    # the scrape reports the sum over both.
    time.sleep(metrics.FLUSH_SECONDS + 0.5)
    for _ in range(6):
        assert total(scrape(server), "conduit_http_requests_total", **endpoint) == before + sent
    samples = scrape(server)
    assert total(samples, "conduit_http_request_duration_seconds_count", **endpoint) == before + sent
    inf = total(samples, "conduit_http_request_duration_seconds_bucket", le="+Inf", **endpoint)
    assert inf == before + sent


@pytest.mark.postgres
def test_access_lines_are_json_and_never_contain_secrets(live: tuple[Server, Path]) -> None:
    server, _ = live
    password = f"pw-{secrets.token_hex(8)}"
    name = f"log{secrets.token_hex(3)}"
    status, body, _ = call(
        server, "POST", "/api/users", {"user": {"username": name, "email": f"{name}@example.com", "password": password}}
    )
    assert status == 201
    token = json.loads(body)["user"]["token"]
    status, _, headers = call(
        server,
        "GET",
        "/api/user?token=" + token,
        headers={**auth(token), "X-Request-Id": "req-abc.123", "X-Forwarded-For": "203.0.113.7", "Cookie": token},
    )
    assert status == 200
    assert headers["X-Request-Id"] == "req-abc.123"
    status, _, _ = call(server, "GET", "/api/user", headers={"Authorization": "Token not-a-valid-token"})
    assert status == 401

    time.sleep(0.2)
    line = next(line for line in access_lines(server) if line.get("request_id") == "req-abc.123")
    assert set(line) == {
        "ts",
        "level",
        "logger",
        "msg",
        "pid",
        "request_id",
        "method",
        "path",
        "endpoint",
        "status",
        "duration_ms",
        "bytes",
        "client",
        "user_id",
    }
    assert line["level"] == "info" and line["msg"] == "request"
    assert (line["method"], line["path"], line["endpoint"], line["status"]) == ("GET", "/api/user", "/api/user", 200)
    assert line["client"] == "203.0.113.7"  # as forwarded by the trusted local proxy
    assert isinstance(line["user_id"], int)
    assert line["pid"] in worker_pids(server)
    assert 0 < line["duration_ms"] < 30_000 and line["bytes"] > 0
    time.strptime(line["ts"][:19], "%Y-%m-%dT%H:%M:%S")
    registration = next(line for line in access_lines(server) if line["path"] == "/api/users" and line["status"] == 201)
    assert registration["user_id"] is None

    log = server.log_path.read_text()
    assert token not in log
    assert password not in log
    assert "not-a-valid-token" not in log


@pytest.mark.postgres
def test_cache_events_are_counted_over_workers(live: tuple[Server, Path]) -> None:
    server, _ = live
    name = f"c{secrets.token_hex(3)}"
    user = {"username": name, "email": f"{name}@example.com", "password": "password123"}
    token = json.loads(call(server, "POST", "/api/users", {"user": user})[1])["user"]["token"]
    article = {"article": {"title": f"Cached {name}", "description": "d", "body": "b"}}
    slug = json.loads(call(server, "POST", "/api/articles", article, auth(token))[1])["article"]["slug"]
    before = scrape(server)
    for _ in range(10):
        assert call(server, "GET", f"/api/articles/{slug}")[0] == 200
    time.sleep(metrics.FLUSH_SECONDS + 0.5)
    after = scrape(server)
    hits = total(after, "conduit_cache_hits_total") - total(before, "conduit_cache_hits_total")
    misses = total(after, "conduit_cache_misses_total") - total(before, "conduit_cache_misses_total")
    assert misses >= 1 and hits >= 1
    assert hits + misses >= 10  # every read looked in the cache, whichever worker served it
    assert total(after, "conduit_db_pool_max_connections", pool="read") > 0
    assert total(after, "conduit_cache_errors_total") == 0


@pytest.mark.postgres
def test_a_forwarded_public_client_cannot_read_metrics(live: tuple[Server, Path]) -> None:
    server, _ = live
    assert call(server, "GET", "/metrics", headers={"X-Forwarded-For": "198.51.100.1"})[0] == 404
    assert call(server, "GET", "/metrics")[0] == 200


@pytest.mark.postgres
def test_a_blocked_event_loop_is_counted_and_logged_as_one_line(live: tuple[Server, Path]) -> None:
    server, _ = live
    # Building the OpenAPI document (once per worker) takes well over 5 ms of CPU without yielding.
    deadline = time.monotonic() + 20
    while total(scrape(server), "conduit_event_loop_blocked_total") == 0:
        assert time.monotonic() < deadline, "no blocked event loop was counted"
        for _ in range(4):
            call(server, "GET", "/api/openapi.json")
        time.sleep(0.3)
    lines = [json.loads(raw) for raw in server.log_path.read_text().splitlines()]
    blocked = [line for line in lines if line["msg"].startswith("event loop blocked")]
    assert blocked and blocked[0]["level"] == "warning" and "appears to be blocked" in blocked[0]["report"]


@pytest.mark.postgres
def test_a_dead_workers_live_gauges_are_dropped_and_its_counts_kept(live: tuple[Server, Path]) -> None:
    server, prom = live
    endpoint = {"endpoint": "/healthz", "method": "GET", "status": "200"}
    for _ in range(5):
        call(server, "GET", "/healthz")
    time.sleep(metrics.FLUSH_SECONDS + 0.5)  # every worker's counts are written
    before = total(scrape(server), "conduit_http_requests_total", **endpoint)
    victim = min(worker_pids(server))
    assert (prom / f"gauge_livesum_{victim}.db").exists()
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30

    def replaced() -> bool:
        pids = worker_pids(server) - {victim}
        gauges = {int(path.stem.rsplit("_", 1)[1]) for path in prom.glob("gauge_livesum_*.db")}
        return len(pids) == 2 and gauges == pids  # the dead one's dropped, the new one's booted

    while not replaced():
        assert time.monotonic() < deadline, "the master did not replace the worker"
        time.sleep(0.1)
    samples = scrape(server)
    # The /healthz requests the killed worker answered are still in the sum.
    assert total(samples, "conduit_http_requests_total", **endpoint) == before
    # The pool capacity is summed over live workers only: two workers' worth, not three.
    capacity = total(samples, "conduit_db_pool_max_connections", pool="read")
    assert capacity == 2 * 15, capacity


@pytest.mark.postgres
def test_fast_path_hits_are_counted_and_logged_like_any_request(live: tuple[Server, Path]) -> None:
    server, _ = live
    name = f"fast{secrets.token_hex(3)}"
    user = {"username": name, "email": f"{name}@example.com", "password": "password123"}
    assert call(server, "POST", "/api/users", {"user": user})[0] == 201
    path = f"/api/profiles/{name}"
    endpoint = {"endpoint": "/api/profiles/{username}", "method": "GET", "status": "200"}
    time.sleep(metrics.FLUSH_SECONDS + 0.5)
    before = scrape(server)
    for n in range(10):  # each worker fills on its first read at most; the rest are hits
        status, _, headers = call(server, "GET", path, headers={"X-Request-Id": f"fast-{name}-{n}"})
        assert status == 200 and headers["X-Request-Id"] == f"fast-{name}-{n}"
    time.sleep(metrics.FLUSH_SECONDS + 0.5)
    after = scrape(server)
    fast = total(after, "conduit_cache_fastpath_total") - total(before, "conduit_cache_fastpath_total")
    assert fast >= 8
    requests = total(after, "conduit_http_requests_total", **endpoint) - total(
        before, "conduit_http_requests_total", **endpoint
    )
    assert requests == 10
    observed = total(after, "conduit_http_request_duration_seconds_count", **endpoint) - total(
        before, "conduit_http_request_duration_seconds_count", **endpoint
    )
    assert observed == 10
    lines = [line for line in access_lines(server) if line.get("request_id", "").startswith(f"fast-{name}-")]
    assert len(lines) == 10
    for line in lines:
        assert (line["method"], line["path"], line["endpoint"], line["status"]) == (
            "GET",
            path,
            "/api/profiles/{username}",
            200,
        )
        assert line["bytes"] > 0 and line["duration_ms"] >= 0 and line["user_id"] is None
        assert line["client"] == "127.0.0.1" and line["pid"] in worker_pids(server)
