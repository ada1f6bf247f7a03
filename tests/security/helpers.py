"""What the security tests share: the API's operations read from its own OpenAPI document, and a
snapshot of every table to prove that a refused request changed nothing.

Reading the operations from the document (which is built from the URL map) means a route added
later is attacked by these tests without editing them; where a test needs to know something about
an operation (a valid body, an owner), it fails for an operation it does not know yet.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from flask import Flask
from sqlalchemy import inspect, text

from service.api.openapi import build_document
from service.storage.db import get_db

# A valid body per request schema; a new schema fails test_bad_bodies.py.
VALID_BODIES: dict[str, dict[str, Any]] = {
    "NewUserRequest": {"user": {"username": "newbie", "email": "newbie@example.com", "password": "password123"}},
    "LoginUserRequest": {"user": {"email": "alice@example.com", "password": "password123"}},
    "UpdateUserRequest": {"user": {"bio": "new bio", "image": "https://example.com/a.png"}},
    "NewArticleRequest": {"article": {"title": "T", "description": "D", "body": "B", "tagList": ["x"]}},
    "UpdateArticleRequest": {"article": {"title": "T2", "description": "D2", "body": "B2"}},
    "NewCommentRequest": {"comment": {"body": "C"}},
}


@dataclass(frozen=True)
class Operation:
    method: str  # lower case, as in the document
    path: str  # the document's template, e.g. /api/articles/{slug}
    path_params: tuple[str, ...]
    query_params: dict[str, dict[str, Any]]  # name -> schema
    auth: str  # "required", "optional" or "none"
    body: str | None  # the request body's schema name
    raw: dict[str, Any] = field(repr=False, compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def url(self, **values: Any) -> str:
        """The path with each {param} replaced by its percent-encoded value."""
        return re.sub(r"\{(\w+)\}", lambda m: quote(str(values[m[1]]), safe=""), self.path)


def operations(app: Flask) -> list[Operation]:
    """Every operation the app publishes, in document order."""
    found = []
    for path, methods in build_document(app)["paths"].items():
        for method, op in methods.items():
            params = op.get("parameters", [])
            security = op.get("security")
            body_ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            found.append(
                Operation(
                    method=method,
                    path=path,
                    path_params=tuple(p["name"] for p in params if p["in"] == "path"),
                    query_params={p["name"]: p["schema"] for p in params if p["in"] == "query"},
                    auth="none" if not security else ("optional" if {} in security else "required"),
                    body=body_ref["$ref"].rsplit("/", 1)[1] if "$ref" in body_ref else None,
                    raw=op,
                )
            )
    return found


def schemas(app: Flask) -> dict[str, Any]:
    return dict(build_document(app)["components"]["schemas"])


def snapshot(app: Flask) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    with app.app_context(), get_db().read() as conn:
        tables = sorted(inspect(conn).get_table_names())
        return {
            table: sorted((tuple(row) for row in conn.execute(text(f'SELECT * FROM "{table}"'))), key=repr)
            for table in tables
            if table != "schema_migrations"
        }


def changed_tables(before: dict[str, list[tuple[Any, ...]]], after: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    return sorted(t for t in before.keys() | after.keys() if before.get(t) != after.get(t))


def assert_error_shape(resp: Any) -> list[str]:
    """The messages of an error response in the API's one shape."""
    assert resp.mimetype == "application/json", (resp.status_code, resp.get_data()[:200])
    body = resp.get_json()
    assert set(body) == {"errors"} and set(body["errors"]) == {"body"}, body
    messages = body["errors"]["body"]
    assert messages and all(isinstance(m, str) and m for m in messages), body
    return list(messages)
