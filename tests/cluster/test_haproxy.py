"""haproxy.cfg at the edge: what is replayed, request ids, X-Forwarded-For, limits, local-only stats.

The replay policy and the headers are checked against stub upstreams (one answers and echoes what it
received, one drops every request unanswered, as a crashed replica would), loaded the way every
deployment loads HAProxy: haproxy.cfg plus a servers file. The rest runs against the cluster.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import procs
from ops.cluster import Cluster
from ops.inventory import BACKEND, ROOT, haproxy_binary
from ops.lbadmin import Admin
from tests.cluster.conftest import distinct_free_ports, extra_haproxy, require_haproxy, wait_for
from tests.live import post_body
from tests.loadgen import Client

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class Stub(socketserver.ThreadingTCPServer):
    """Answers /healthz; other requests are echoed as JSON, or dropped unanswered when `drop` is set."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, drop: bool) -> None:
        self.drop = drop
        super().__init__(("127.0.0.1", port), StubHandler)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy resets health check connections; not worth a traceback


class StubHandler(socketserver.StreamRequestHandler):
    server: Stub

    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            headers: list[tuple[str, str]] = []
            while (header := self.rfile.readline().decode()) not in ("\r\n", "\n", ""):
                name, _, value = header.partition(":")
                headers.append((name.strip().lower(), value.strip()))
            length = int(dict(headers).get("content-length", "0"))
            self.rfile.read(length)
            method, path, _version = line.decode().split(" ", 2)
            if path != "/healthz" and self.server.drop:
                return  # closes the connection: HAProxy sees an empty response
            body = json.dumps({"method": method, "path": path, "headers": headers}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            self.wfile.write(head.encode() + body)


@pytest.fixture(scope="module")
def stub_lb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HAProxy (haproxy.cfg + a servers file) in front of one dropping and one answering stub."""
    require_haproxy()
    drop_port, echo_port, port, stats_port = distinct_free_ports(4)
    stubs = [Stub(drop_port, drop=True), Stub(echo_port, drop=False)]
    for stub in stubs:
        threading.Thread(target=stub.serve_forever, daemon=True).start()
    state = Path(tmp_path_factory.mktemp("lb", numbered=True))
    servers = state / "servers.cfg"
    servers.write_text(f"backend {BACKEND} from replicas\n    server drop 127.0.0.1:{drop_port}\n")
    servers.write_text(servers.read_text() + f"    server echo 127.0.0.1:{echo_port}\n")
    sock = Path("/tmp") / f"conduit-lb-{port}.sock"  # unix socket paths are short
    env = {"LB_BIND": f"127.0.0.1:{port}", "LB_STATS_BIND": f"127.0.0.1:{stats_port}", "LB_ADMIN_SOCKET": str(sock)}
    argv = [haproxy_binary(), "-db", "-f", str(ROOT / "haproxy.cfg"), "-f", str(servers)]
    proc = procs.spawn(argv, env, ROOT, state / "haproxy.log")
    try:
        admin = Admin(sock)
        wait_for(lambda: sock.exists() and all(s.up for s in admin.servers(BACKEND).values()), timeout=15)
        yield f"http://127.0.0.1:{port}"
    finally:
        procs.stop(proc, timeout=5)
        sock.unlink(missing_ok=True)
        for stub in stubs:
            stub.shutdown()
            stub.server_close()


def statuses(base: str, method: str, path: str, n: int = 12, **headers: str) -> list[int]:
    """Status of `n` requests, each on a new connection (so a dropped one is a 502, not a silent close)."""
    out = []
    for _ in range(n):
        client = Client(base, timeout=5)
        body = {} if method in ("POST", "PUT") else None
        out.append(client.request(method, path, json=body, headers=headers).status)
        client.close()
    return out


@pytest.mark.parametrize(
    ("method", "path", "headers"),
    [
        ("GET", "/api/articles", {}),
        ("HEAD", "/api/articles", {}),
        ("PUT", "/api/user", {}),
        ("DELETE", "/api/articles/a-slug", {}),
        ("POST", "/api/articles/a-slug/favorite", {}),
        ("POST", "/api/profiles/someone/follow", {}),
        ("POST", "/api/articles", {"Idempotency-Key": "k1"}),
        ("POST", "/api/users", {"Idempotency-Key": "k2"}),
        ("POST", "/api/articles/a-slug/comments", {"Idempotency-Key": "k3"}),
    ],
)
def test_requests_safe_to_replay_are_replayed_on_another_replica(
    stub_lb: str, method: str, path: str, headers: dict[str, str]
) -> None:
    assert statuses(stub_lb, method, path, **headers) == [200] * 12


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/articles", {}),
        ("/api/articles/a-slug/comments", {}),
        ("/api/users/login", {}),
        # A key only makes a replay safe on the routes that implement it.
        ("/api/users/login", {"Idempotency-Key": "k4"}),
    ],
)
def test_other_posts_are_never_replayed(stub_lb: str, path: str, headers: dict[str, str]) -> None:
    got = statuses(stub_lb, "POST", path, **headers)
    assert set(got) == {200, 502}, got  # 502 when the dropping stub had it: not sent elsewhere


def test_request_id_is_kept_when_sane_else_generated_and_x_forwarded_for_is_the_peer(stub_lb: str) -> None:
    client = Client(stub_lb)
    for _ in range(20):  # until the answering stub has one
        resp = client.request("GET", "/x", headers={"X-Request-Id": "abc-123", "X-Forwarded-For": "203.0.113.9"})
        if resp.status == 200:
            break
    seen = dict(resp.json()["headers"])
    assert resp.headers["x-request-id"] == seen["x-request-id"] == "abc-123"
    assert seen["x-forwarded-for"] == "127.0.0.1"  # the client's own value is dropped at the edge
    for bad in ("has spaces", "x" * 129):
        resp = client.request("GET", "/x", headers={"X-Request-Id": bad})
        assert UUID.fullmatch(resp.headers["x-request-id"]), resp.headers
    resp = client.request("GET", "/x")
    assert UUID.fullmatch(resp.headers["x-request-id"])


def test_metrics_is_refused_on_the_public_port_but_each_replica_serves_it(cluster: Cluster) -> None:
    client = Client(cluster.state["api"])
    for path in ("/metrics", "/metrics/", "//metrics", "/%6Detrics", "/METRICS", "/metrics?x=1"):
        resp = client.request("GET", path)
        assert resp.status == 403, path
        assert resp.json() == {"errors": {"body": ["forbidden"]}}
    _host, port = cluster.replicas()["app1"]
    assert Client(f"http://127.0.0.1:{port}").request("GET", "/metrics").status == 200


def test_a_body_past_what_a_replica_reads_away_is_refused_with_413_before_any_replica(cluster: Cluster) -> None:
    admin = cluster.admin()
    served = int(admin.stats(BACKEND)["BACKEND"]["stot"])
    _scheme, _, hostport = cluster.state["api"].partition("://")
    host, port = hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        head = "POST /api/articles HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        sock.sendall(f"{head}Content-Length: {64 * 1024 * 1024 + 1}\r\n\r\n".encode())
        answer = sock.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert '{"errors":{"body":["request body too large"]}}' in answer
    assert int(admin.stats(BACKEND)["BACKEND"]["stot"]) == served


@pytest.mark.parametrize("close", [False, True], ids=["keep-alive", "connection-close"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_20_mb_body_through_haproxy_is_answered_413_in_the_error_shape(
    cluster: Cluster, chunked: bool, close: bool
) -> None:
    # A replica answers (HAProxy 2.6 would reset a client still sending after an answer of its own).
    answer = post_body(cluster.state["api"], "/api/users", 20 * 1024 * 1024, chunked=chunked, close=close)
    assert answer.status == 413, answer
    assert answer.error == "", answer  # e.g. a reset while the client was still sending
    errors = json.loads(answer.body)
    assert list(errors) == ["errors"] and list(errors["errors"]) == ["body"], errors
    assert "too large" in errors["errors"]["body"][0]


def test_request_id_reaches_the_replica_log(cluster: Cluster) -> None:
    request_id = f"test-{uuid.uuid4().hex}"
    resp = Client(cluster.state["api"]).request("GET", "/api/tags", headers={"X-Request-Id": request_id})
    assert resp.status == 200 and resp.headers["x-request-id"] == request_id

    def logged() -> bool:
        for name in cluster.replicas():
            for line in (cluster.dir / f"{name}.log").read_text().splitlines():
                if request_id in line and line.endswith("}"):  # a line still being written is skipped
                    fields = json.loads(line)
                    return bool(fields.get("request_id") == request_id and fields.get("path") == "/api/tags")
        return False

    wait_for(logged, timeout=5, interval=0.1)


def test_stats_prometheus_and_lb_health_are_served_on_the_local_port(cluster: Cluster) -> None:
    client = Client(cluster.state["stats"])
    assert client.request("GET", "/stats").status == 200
    metrics = client.request("GET", "/metrics")
    assert metrics.status == 200 and b"haproxy_backend_active_servers" in metrics.body
    assert client.request("GET", "/healthz").status == 200
    assert cluster.state["stats"].startswith("http://127.0.0.1:")


def test_the_cluster_own_traffic_is_exempt_from_the_address_limit_by_configuration(cluster: Cluster) -> None:
    # CLUSTER_ENV: LB_RATE_LIMIT=100 per 10 s, and 127.0.0.1 listed in LB_RATE_EXEMPT_FILE.
    client = Client(cluster.state["api"])
    assert {client.request("GET", "/api/tags").status for _ in range(150)} == {200}


@pytest.fixture(scope="module")
def strict_lb(cluster: Cluster) -> Iterator[str]:
    """A second HAProxy on the same replicas with the default (empty) exemption list, a limit of 5
    requests per 10 s and 1 s for request headers."""
    default_list = str(ROOT / "ops" / "haproxy" / "rate-limit-exempt.txt")
    with extra_haproxy(cluster, LB_RATE_LIMIT="5", LB_RATE_EXEMPT_FILE=default_list, LB_HEADER_TIMEOUT="1s") as lb:
        yield lb[0]


def test_slow_request_headers_are_cut_off_with_408(strict_lb: str) -> None:
    host, port = strict_lb.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/tags HTTP/1.1\r\nHost: x\r\n")
        answer = b""
        try:
            for _ in range(40):  # one header byte every 0.2 s, never the blank line
                sock.sendall(b"X")
                time.sleep(0.2)
        except OSError:
            pass  # HAProxy closed the connection
        sock.settimeout(5)
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert 0.9 < time.monotonic() - started < 5


def test_a_client_over_the_address_limit_gets_429_with_retry_after(strict_lb: str) -> None:
    client = Client(strict_lb)
    got = [client.request("GET", "/api/tags") for _ in range(8)]
    assert [r.status for r in got] == [200] * 5 + [429] * 3
    assert got[-1].headers["retry-after"] == "10"
    assert got[-1].json() == {"errors": {"body": ["too many requests from this address; retry later"]}}
