"""compose.yaml: valid by the Compose Specification schema, and consistent with haproxy.cfg and the
servers file it mounts. (Docker is not available where the tests run; this is what can be checked.)"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
import pytest
import yaml

from config.settings import BaseConfig
from ops.cluster import DIRECT_HEADROOM
from ops.inventory import ROOT, haproxy_binary, read_inventory
from tests.cluster.conftest import require_haproxy

SCHEMA = Path(__file__).parent / "compose-spec" / "compose-spec.json"
HAPROXY_DIR = "/usr/local/etc/haproxy"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema_rs.validator_for(json.loads(SCHEMA.read_text()))


def test_compose_file_is_valid_by_the_compose_specification(compose: dict[str, Any], validator: Any) -> None:
    assert [error.message for error in validator.iter_errors(compose)] == []


def test_the_schema_check_catches_a_broken_file(compose: dict[str, Any], validator: Any) -> None:
    broken = json.loads(json.dumps(compose))
    broken["services"]["app1"]["depends_on"]["postgres"]["condition"] = "service_ready"
    broken["services"]["haproxy"]["ports"] = [{"target": "eighty"}]
    assert len(list(validator.iter_errors(broken))) >= 2


def haproxy_service(compose: dict[str, Any]) -> tuple[dict[str, Any], Path]:
    """The HAProxy service and the servers file (in this repository) that its command loads."""
    service = compose["services"]["haproxy"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1)[::-1] for v in service["volumes"])  # container -> host
    assert mounts[f"{HAPROXY_DIR}/haproxy.cfg"] == "./haproxy.cfg"
    files = [arg for prev, arg in zip(service["command"], service["command"][1:], strict=False) if prev == "-f"]
    assert files[0] == f"{HAPROXY_DIR}/haproxy.cfg" and len(files) == 2
    for container, host in mounts.items():
        if files[1].startswith(container + "/"):
            return service, ROOT / host / files[1].removeprefix(container + "/")
    raise AssertionError(f"{files[1]} is not mounted from the repository")


def test_every_server_in_the_servers_file_is_a_replica_service_on_its_port(compose: dict[str, Any]) -> None:
    services = compose["services"]
    _service, servers_file = haproxy_service(compose)
    inventory = read_inventory(servers_file)
    replicas = {name for name, s in services.items() if s.get("image") == "conduit:latest"}
    assert set(inventory) == replicas == {"app1", "app2", "app3"}
    for name, (host, port) in inventory.items():
        assert host == name  # resolved by Docker's DNS
        assert str(port) == str(services[name]["environment"]["PORT"])
        assert services[name]["environment"]["HOST"] == "0.0.0.0"


def test_replicas_reach_the_database_and_redis_services_and_trust_only_haproxy(compose: dict[str, Any]) -> None:
    services = compose["services"]
    haproxy_ip = services["haproxy"]["networks"]["backend"]["ipv4_address"]
    for name in ("app1", "app2", "app3"):
        env = services[name]["environment"]
        assert urlsplit(env["DATABASE_URL"]).hostname == "pgbouncer"
        assert urlsplit(env["DATABASE_DIRECT_URL"]).hostname == "postgres"
        for url in (env["DATABASE_URL"], env["DATABASE_DIRECT_URL"]):
            assert urlsplit(url).path == "/" + services["postgres"]["environment"]["POSTGRES_DB"]
        assert urlsplit(env["REDIS_URL"]).hostname == "redis"
        assert env["FORWARDED_ALLOW_IPS"] == haproxy_ip
        assert env["APP_ENV"] == "production" and env["SECRET_KEY"].startswith("${SECRET_KEY:?")
        assert float(env["SHUTDOWN_DELAY"]) >= 2  # longer than HAProxy's inter 1 s x fall 2
        per_worker = int(env["DB_POOL_SIZE"]) + int(env["DB_WRITE_POOL_SIZE"]) + 2 * int(env["DB_MAX_OVERFLOW"])
        assert 3 * int(env["WEB_CONCURRENCY"]) * per_worker <= 100 - 3  # PostgreSQL's default max_connections
        assert {k: v["condition"] for k, v in services[name]["depends_on"].items()} == {
            "postgres": "service_healthy",
            "pgbouncer": "service_healthy",
            "redis": "service_healthy",
        }


def test_haproxy_waits_for_healthy_replicas_and_publishes_stats_on_loopback_only(compose: dict[str, Any]) -> None:
    services = compose["services"]
    service, _servers = haproxy_service(compose)
    assert {k: v["condition"] for k, v in service["depends_on"].items()} == {
        f"app{i}": "service_healthy" for i in (1, 2, 3)
    }
    assert all("healthcheck" in s for s in services.values())
    lb_port = service["environment"]["LB_BIND"].rsplit(":", 1)[1]
    stats_port = service["environment"]["LB_STATS_BIND"].rsplit(":", 1)[1]
    assert f"{lb_port}:{lb_port}" in service["ports"]
    assert f"127.0.0.1:{stats_port}:{stats_port}" in service["ports"]
    assert stats_port in " ".join(service["healthcheck"]["test"])
    assert not any("ports" in s for name, s in services.items() if name != "haproxy")


def test_haproxy_accepts_its_compose_configuration(compose: dict[str, Any]) -> None:
    require_haproxy()
    service, servers_file = haproxy_service(compose)
    env = {**os.environ, **{k: str(v) for k, v in service["environment"].items()}}
    argv = [haproxy_binary(), "-c", "-f", str(ROOT / "haproxy.cfg"), "-f", str(servers_file)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    # Outside Docker the service names do not resolve; that is the only warning allowed.
    warnings = [line for line in out.stderr.splitlines() if "[WARNING]" in line]
    assert all(re.search(r"could not resolve address 'app\d'", w) for w in warnings), warnings


def test_the_example_servers_file_for_several_hosts_is_valid_without_warnings() -> None:
    require_haproxy()
    example = ROOT / "ops" / "haproxy" / "servers.example.cfg"
    argv = [haproxy_binary(), "-c", "-dW", "-f", str(ROOT / "haproxy.cfg"), "-f", str(example)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(read_inventory(example)) == 4


def test_pgbouncer_pools_transactions_for_every_replica_connection_within_max_connections(
    compose: dict[str, Any],
) -> None:
    """ops/pgbouncer/pgbouncer.compose.ini agrees with the replicas (docs/operations.md, "PgBouncer")."""
    services = compose["services"]
    bouncer = services["pgbouncer"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1)[::-1] for v in bouncer["volumes"])  # container -> host
    ini = configparser.ConfigParser(comment_prefixes=(";", "#"), inline_comment_prefixes=None)
    ini.read_string((ROOT / mounts["/etc/pgbouncer/pgbouncer.ini"]).read_text())
    settings = ini["pgbouncer"]
    replicas = [s["environment"] for s in services.values() if s.get("image") == "conduit:latest"]
    database = urlsplit(replicas[0]["DATABASE_URL"])
    assert settings["pool_mode"] == "transaction"
    assert settings["listen_port"] == str(database.port)
    assert "host=postgres port=5432" in ini["databases"][database.path.lstrip("/")]
    clients = sum(
        int(env["WEB_CONCURRENCY"])
        * (int(env["DB_POOL_SIZE"]) + int(env["DB_WRITE_POOL_SIZE"]) + 2 * int(env["DB_MAX_OVERFLOW"]))
        for env in replicas
    )
    assert int(settings["max_client_conn"]) >= clients
    assert int(settings["max_db_connections"]) == int(settings["default_pool_size"]) <= 100 - 3 - DIRECT_HEADROOM
    assert float(settings["query_wait_timeout"]) > BaseConfig.DB_POOL_TIMEOUT
    assert float(settings["server_connect_timeout"]) <= 2 * BaseConfig.DB_CONNECT_TIMEOUT
    assert settings["server_reset_query"] == "" and settings["ignore_startup_parameters"] == ""
    assert bouncer["environment"]["POSTGRES_PASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
