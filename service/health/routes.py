"""Liveness: answers while the process can serve, without touching shared services.

A database blip must not make every replica look dead to the load balancer at
once, so this check never talks to PostgreSQL or Redis.
"""

from __future__ import annotations

from flask import Blueprint, Response

from service.web import endpoint

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@endpoint("Liveness check", tag="Meta", responses={200: None})
def healthz() -> Response:
    return Response(b"ok\n", mimetype="text/plain", headers={"Cache-Control": "no-store"})
