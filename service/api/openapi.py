"""The OpenAPI document, built from the routes' own `@endpoint` declarations.

Every rule in the URL map whose view carries an `Operation` is published, with
schemas generated from the msgspec types it parses and returns; a new blueprint
appears here without editing any YAML. `/api/docs` renders it with Swagger UI
served from this package (no CDN).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson
from flask import Blueprint, Flask, Response, current_app, url_for

from service.api.endpoint import Operation, endpoint
from service.api.schemas import GenericError
from service.security import ratelimit

bp = Blueprint("docs", __name__, static_folder="static", static_url_path="/docs/static")

RETRY_AFTER = {
    "description": "Whole seconds until the limit allows this request again",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_PATH_PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
REF = "#/components/schemas/{name}"
# The operation groups, in the order a reader needs them (a new tag is listed after these).
TAGS = {
    "User and Authentication": "Register, log in, read and change the current user.",
    "Profile": "Public profiles; follow and unfollow their owners.",
    "Articles": "Write, read, update and delete articles; list them with filters, or the feed of followed authors.",
    "Comments": "Comments on an article.",
    "Favorites": "Favorite and unfavorite an article.",
    "Tags": "The most used tags.",
    "Operations": "Liveness, readiness and metrics, for load balancers and operators.",
    "Documentation": "This document and its readable rendering.",
}
ERROR_TEXT = {
    401: "Missing or invalid token",
    403: "Not the owner of the resource",
    404: "Not found",
    413: "Request body too large",
    415: "The body is not JSON (Content-Type must be application/json)",
    412: "If-Match does not match the current ETag",
    422: "Invalid request",
    429: "Rate limit exceeded; retry after `Retry-After` seconds",
    503: "A dependency is unavailable; retry after `Retry-After` seconds",
}


def _plain(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter's schema without its `null` branch: a query string cannot carry null, an absent
    parameter is what `None` stands for, and `required: false` already says it may be absent."""
    options = [option for option in schema.get("anyOf", ()) if option.get("type") != "null"]
    if len(options) != 1:
        return dict(schema)
    plain = {key: value for key, value in schema.items() if key != "anyOf" and not (key == "default" and value is None)}
    return {**options[0], **plain}


def _parameters(rule_path: str, op: Operation, converters: Mapping[str, type]) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for match in _PATH_PARAM.finditer(rule_path):
        kind = "integer" if match["converter"] == "int" else "string"
        # A converter may publish its own schema (e.g. `slug` says which values it refuses).
        converter = converters.get(match["converter"] or "default")
        schema = dict(getattr(converter, "openapi_schema", None) or {"type": kind})
        description = op.path.get(match["name"]) or schema.pop("description", None)
        if not description:
            raise ValueError(f"{op.operation_id}: describe the path parameter {match['name']} (@endpoint path=)")
        schema.pop("description", None)
        param = {"name": match["name"], "in": "path", "required": True, "description": description}
        params.append({**param, "schema": schema})
    if op.query is not None:
        (_,), defs = msgspec.json.schema_components([op.query], ref_template=REF)
        for name, schema in defs[op.query.__name__]["properties"].items():
            schema = _plain(schema)
            description = schema.pop("description", "")
            param = {"name": name, "in": "query", "required": False, "schema": schema}
            if description:
                param["description"] = description
            params.append(param)
    params.extend(dict(header) for header in op.headers)
    return params


def _operation(
    rule_path: str,
    method: str,
    op: Operation,
    types: set[type],
    converters: Mapping[str, type],
    rate_limited: bool = False,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "tags": [op.tag],
        "summary": op.summary,
        "operationId": op.operation_id,
        "parameters": _parameters(rule_path, op, converters),
        "responses": {},
    }
    if op.description:
        out["description"] = op.description
    # Said on every operation, `[]` for none: a reader (or linter) need not guess what an absent one means.
    out["security"] = {"none": [], "required": [{"Token": []}], "optional": [{"Token": []}, {}]}[op.auth]
    if op.body is not None:
        types.add(op.body)
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(name=op.body.__name__)}}},
        }
    errors = {503} if op.uses_database else set()
    if op.auth != "none":
        errors.add(401)
    if "<" in rule_path:
        errors.add(404)
    if op.body is not None:
        errors |= {413, 415, 422}
    if op.query is not None or op.headers:
        errors.add(422)
    if rate_limited:
        errors.add(429)
    responses: dict[int, type | None] = {status: GenericError for status in errors}
    responses.update(op.responses)
    for status, kind in sorted(responses.items()):
        description = (
            ERROR_TEXT.get(status, "OK") if kind is GenericError else ("No content" if status == 204 else "OK")
        )
        entry: dict[str, Any] = {"description": description}
        if kind is not None:
            types.add(kind)
            entry["content"] = {"application/json": {"schema": {"$ref": REF.format(name=kind.__name__)}}}
        if status == 429:
            entry["headers"] = {"Retry-After": RETRY_AFTER}
        if status in op.response_headers:
            entry.setdefault("headers", {}).update(op.response_headers[status])
        out["responses"][str(status)] = entry
    # gunicorn refuses a request line over `limit_request_line` bytes (gunicorn.conf.py) before the
    # app sees it: any operation can get it, and its body is gunicorn's HTML page, not the error shape.
    out["responses"]["414"] = {
        "description": "Request line (method, path and query) too long; refused by gunicorn, HTML body",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    out["responses"] = dict(sorted(out["responses"].items()))
    return out


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document for every declared route of `app`."""
    paths: dict[str, dict[str, Any]] = {}
    types: set[type] = set()
    operation_ids: dict[str, str] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions[rule.endpoint]
        op = getattr(view, "__openapi__", None)
        if op is None:
            continue
        # Documented whether or not RATELIMIT_ENABLED is on here: the contract is the same everywhere.
        rate_limited = bool(ratelimit.declared(view))
        path = _PATH_PARAM.sub(lambda m: "{" + m["name"] + "}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            seen = operation_ids.setdefault(op.operation_id, f"{method} {rule.rule}")
            if seen != f"{method} {rule.rule}":
                raise ValueError(f"operationId {op.operation_id} is declared by {seen} and {method} {rule.rule}")
            paths.setdefault(path, {})[method.lower()] = _operation(
                rule.rule, method.lower(), op, types, app.url_map.converters, rate_limited
            )
    _, schemas = msgspec.json.schema_components(sorted(types, key=lambda t: t.__name__), ref_template=REF)
    used = {tag for item in paths.values() for operation in item.values() for tag in operation["tags"]}
    tags = [{"name": name, "description": text} for name, text in TAGS.items() if name in used]
    tags += [{"name": name} for name in sorted(used - set(TAGS))]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Conduit API",
            "version": "1.0.0",
            "description": "The RealWorld Conduit API. Errors always have the shape "
            '`{"errors": {"body": ["..."]}}`. Send `Authorization: Token <jwt>` (or `Bearer`).',
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "Token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "`Token <jwt>` from POST /api/users or /api/users/login; `Bearer <jwt>` also works.",
                }
            },
        },
    }


@bp.get("/openapi.json")
@endpoint(
    "This OpenAPI document",
    tag="Documentation",
    operation_id="GetOpenApiDocument",
    responses={200: None},
    uses_database=False,
    description="OpenAPI 3.1, built from the routes' own declarations: what client generators read.",
)
def openapi_json() -> Response:
    document = current_app.extensions.get("openapi_document")
    if document is None:
        document = current_app.extensions["openapi_document"] = orjson.dumps(build_document(current_app))
    return Response(document, mimetype="application/json")


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Conduit API</title>
<link rel="stylesheet" href="{css}"></head>
<body><div id="ui"></div><script src="{js}"></script>
<script>SwaggerUIBundle({{url: "{spec}", dom_id: "#ui", deepLinking: true}});</script>
</body></html>"""


@bp.get("/docs")
@endpoint(
    "Readable API documentation (HTML)",
    tag="Documentation",
    operation_id="GetApiDocumentation",
    responses={200: None},
    uses_database=False,
    description="Swagger UI over this document, served by this service (no CDN).",
)
def docs() -> Response:
    page = DOCS_PAGE.format(
        css=url_for("docs.static", filename="swagger-ui/swagger-ui.css"),
        js=url_for("docs.static", filename="swagger-ui/swagger-ui-bundle.js"),
        spec=url_for("docs.openapi_json"),
    )
    return Response(page, mimetype="text/html")
