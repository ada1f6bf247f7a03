"""Operational endpoints: liveness, readiness and Prometheus metrics.

`/healthz` (liveness, what the load balancer checks) answers while the process
can serve, without touching PostgreSQL or Redis: a database blip must not make
every replica look dead at once. It turns 503 when the worker starts shutting
down (`service.runtime.lifecycle`), so the replica leaves the pool before it stops
accepting. `/readyz` (readiness) also checks the database and the schema, and
reports Redis without failing on it (the service runs uncached without it).
`/metrics` answers only to METRICS_ALLOW.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final, Literal

import gevent
import msgspec
from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from service.api.endpoint import endpoint, respond
from service.api.errors import NotFound, error_response
from service.api.schemas import GenericError
from service.caching.cache import get_cache
from service.runtime import lifecycle, metrics
from service.runtime.logs import AddressList, client_address
from service.storage import migrate
from service.storage.db import get_db

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

PING = text("SELECT 1")
NO_STORE = {"Cache-Control": "no-store"}
DRAINING: Final = "draining"


class Readiness(msgspec.Struct):
    """Readiness of this worker; each part is checked on every call."""

    status: Literal["ready", "not ready", "draining"]
    # ok | down | timeout | not checked (while draining)
    database: str
    # ok | pending (migrations not applied) | unknown (database down) | not checked
    migrations: str
    # ok | down | not configured; never makes the replica unready
    redis: str
    # Read replicas (DATABASE_REPLICA_URLS; absent without them): each one's state and replay lag.
    # Never makes the service unready: their reads go to the primary meanwhile.
    replicas: list[ReplicaState] | msgspec.UnsetType = msgspec.UNSET


class ReplicaState(msgspec.Struct):
    """One read replica as this worker sees it."""

    replica: int
    # ok | down | lagging (past DATABASE_REPLICA_MAX_LAG) | not a standby
    state: str
    # Seconds of replay lag at the check; null when it never answered.
    lag_seconds: float | None


@dataclass
class _SchemaState:
    expected: frozenset[str]
    migrated: bool = False  # once seen complete in this process, only the ping is repeated


class _ReadinessTimeout(Exception):
    pass


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    app = state.app
    app.extensions["metrics_allow"] = AddressList(app.config["METRICS_ALLOW"], "METRICS_ALLOW")
    dialect = app.extensions["db"].dialect
    app.extensions["readiness"] = _SchemaState(frozenset(m.version for m in migrate.available(dialect)))


@bp.get("/healthz")
@endpoint(
    "Liveness check",
    operation_id="GetLiveness",
    tag="Operations",
    responses={200: None, 503: GenericError},
    uses_database=False,
    description="`ok` while this worker serves; 503 once it is shutting down (take it out of the pool). "
    "Never touches the database or Redis.",
)
def healthz() -> Response:
    if lifecycle.is_draining():
        return error_response(503, [DRAINING], {"Retry-After": "1"})
    return Response(b"ok\n", mimetype="text/plain", headers=NO_STORE)


@bp.get("/readyz")
@endpoint(
    "Readiness check",
    operation_id="GetReadiness",
    tag="Operations",
    responses={200: Readiness, 503: Readiness},
    description="200 when this worker can serve requests: the database answers within READINESS_TIMEOUT and "
    "every migration is applied. Redis is reported but never makes it unready. 503 while shutting down.",
)
def readyz() -> Response:
    if lifecycle.is_draining():
        result = Readiness(DRAINING, "not checked", "not checked", "not checked")
    else:
        database, migrations = _database_state()
        ready = database == "ok" and migrations == "ok"
        result = Readiness("ready" if ready else "not ready", database, migrations, _redis_state())
        replicas = get_db().replicas
        if replicas is not None:
            result.replicas = [ReplicaState(**state) for state in replicas.report()]
    resp = respond(result, 200 if result.status == "ready" else 503)
    resp.headers.update(NO_STORE)
    return resp


def _database_state() -> tuple[str, str]:
    """(database, migrations): one `SELECT 1`, plus the applied versions until they were once complete."""
    schema: _SchemaState = current_app.extensions["readiness"]
    try:
        # Interrupts the pool wait, the connect and the query alike (under gevent). A
        # connection interrupted mid-query is in an unknown state: it is discarded.
        with (
            gevent.Timeout(float(current_app.config["READINESS_TIMEOUT"]), _ReadinessTimeout),
            get_db().read(primary=True) as conn,
        ):
            try:
                conn.execute(PING)
                return "ok", "ok" if schema.migrated else _migrations(conn, schema)
            except _ReadinessTimeout:
                conn.invalidate()
                raise
    except _ReadinessTimeout:
        log.warning("readiness: the database did not answer within READINESS_TIMEOUT")
        return "timeout", "unknown"
    except SQLAlchemyError as exc:
        log.warning("readiness: database unavailable (%s)", exc.__class__.__name__)
        return "down", "unknown"


def _migrations(conn: Connection, schema: _SchemaState) -> str:
    try:
        applied = {row[0] for row in conn.execute(migrate.SELECT_APPLIED)}
    except DBAPIError:  # no schema_migrations table: nothing applied yet
        return "pending"
    if not schema.expected <= applied:
        return "pending"
    schema.migrated = True
    return "ok"


def _redis_state() -> str:
    if current_app.config["CACHE_TYPE"] != "RedisCache":
        return "not configured"
    client = getattr(get_cache().backend, "_write_client", None)
    if client is None:
        return "not configured"
    try:
        client.ping()  # bounded by CACHE_SOCKET_TIMEOUT
    except Exception as exc:
        log.warning("readiness: redis unavailable (%s)", exc.__class__.__name__)
        return "down"
    return "ok"


@bp.get("/metrics")
@endpoint(
    "Prometheus metrics (operators only)",
    operation_id="GetMetrics",
    tag="Operations",
    responses={200: None, 404: GenericError},
    uses_database=False,
    description="Prometheus text format, summed over this replica's workers. Not part of the public API: "
    "answered only to client addresses in METRICS_ALLOW (default loopback and private networks), 404 otherwise.",
)
def prometheus_metrics() -> Response:
    if not _metrics_allowed():
        raise NotFound()
    return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE, headers=NO_STORE)


def _metrics_allowed() -> bool:
    environ = request.environ
    proxies: AddressList = current_app.extensions["trusted_proxies"]
    forwarded = "HTTP_X_FORWARDED_FOR" in environ or "HTTP_FORWARDED" in environ
    if forwarded and (environ.get("REMOTE_ADDR") or "") not in proxies:
        return False  # came through a proxy we do not trust: the real client is unknown
    allowed: AddressList = current_app.extensions["metrics_allow"]
    return client_address(environ, proxies) in allowed
