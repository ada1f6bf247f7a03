"""SQL injection (API8:2019; no category of its own in the 2023 list): hostile values in every
parameter, and no SQL built from strings anywhere in the service.

Every path and query parameter of every operation in the OpenAPI document (so new routes are
covered without editing this file) gets SQL metacharacters, comment and stacking tricks, a
`pg_sleep`, traversal sequences and unicode oddities: the answer is a 404, an empty list or a
422, never a 5xx, never slow, and every table is unchanged. A static check reads the service's
modules with `ast` and fails on SQL text made by string formatting; its own tests show it finds
each kind of formatting.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.conftest import Api, auth
from tests.security.helpers import VALID_BODIES, assert_error_shape, changed_tables, operations, snapshot

PAYLOADS = [
    "' OR '1'='1",
    "' OR 1=1--",
    '" OR ""="',
    "1; DROP TABLE users--",
    "'; DROP TABLE articles; --",
    "alice' --",
    "alice'/*",
    "alice\\",
    "' UNION SELECT email, password_hash FROM users--",
    "' AND 1=CAST((SELECT password_hash FROM users LIMIT 1) AS int)--",
    "'||(SELECT pg_sleep(10))||'",
    "1' AND (SELECT 1 FROM pg_sleep(10))::text='1",
    "%",
    "_",
    "%' --",
    ":slug",
    "$1",
    "?",
    "%27%20OR%201%3D1",
    "../../../etc/passwd",
    "..%2F..%2Fetc%2Fpasswd",
    "\x00",
    "a\x00' OR 1=1",
    "\u202eevil",
    "😀",
    "-1",
    "1e20",
    "9" * 30,
    "x" * 300,
]
# Seconds any one of these requests may take (each takes milliseconds; a pg_sleep(10) that ran
# would take 10).
SLOW = 5.0


def test_hostile_parameter_values_find_nothing_break_nothing_and_change_nothing(
    app: Flask, client: FlaskClient, api: Api
) -> None:
    token = api.register("alice")
    api.register("bob")
    slug = api.create_article(token, "Secret plans", tags=["plans"])["slug"]
    client.post(f"/api/articles/{slug}/favorite", headers=auth(token))
    comment = client.post(f"/api/articles/{slug}/comments", json={"comment": {"body": "c"}}, headers=auth(token))
    valid: dict[str, Any] = {"slug": slug, "username": "bob", "comment_id": comment.json["comment"]["id"]}
    before = snapshot(app)
    failures = []
    tried = 0
    for op in operations(app):
        body = VALID_BODIES[op.body] if op.body else None  # valid, so only the parameter is wrong
        targets = [("path", name) for name in op.path_params] + [("query", name) for name in op.query_params]
        for (where, name), payload in ((t, p) for t in targets for p in PAYLOADS):
            values = {**valid, name: payload} if where == "path" else valid
            query = {name: payload} if where == "query" else {}
            started = time.monotonic()
            resp = client.open(op.url(**values), method=op.method, query_string=query, json=body, headers=auth(token))
            elapsed = time.monotonic() - started
            tried += 1
            problem = _problem(resp, where, op.query_params.get(name, {}), elapsed)
            if problem:
                failures.append((op.key, where, name, payload, resp.status_code, problem, resp.get_data()[:120]))
    assert failures == []
    assert tried > 300
    assert changed_tables(before, snapshot(app)) == []
    # Still all there, and still found by the ordinary values.
    assert client.get("/api/articles", query_string={"author": "alice"}).json["articlesCount"] == 1


def _problem(resp: Any, where: str, schema: dict[str, Any], elapsed: float) -> str:
    if elapsed > SLOW:
        return f"took {elapsed:.1f} s"
    if resp.status_code >= 500:
        return "server error"
    if where == "path":
        # No slug, username or comment id looks like these: the object is simply not there.
        return "" if resp.status_code == 404 else "expected 404"
    if resp.status_code == 422:
        assert_error_shape(resp)
        return ""
    if schema.get("type") == "integer":
        return "a non-integer or out-of-range number was accepted"
    if resp.status_code != 200:
        return "expected 200 or 422"
    found = resp.get_json()
    if found.get("articles") or found.get("articlesCount") or found.get("comments"):
        return "a filter value that names nothing found something"
    return ""


# --- static check: no SQL built by string formatting ------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
# Calls whose first argument is SQL text.
SQL_FUNCTIONS = {"text"}
SQL_METHODS = {"text", "execute", "executemany", "executescript", "exec_driver_sql"}


@dataclass(frozen=True)
class Finding:
    where: str
    line: int
    why: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: SQL built by {self.why}"


class _SqlFormattingCheck:
    """Finds SQL text passed to text()/execute()/exec_driver_sql() that was built by formatting.

    A name passed as SQL is followed to every assignment of that name in the module. A value
    that arrives as a function parameter or a loop variable cannot be followed; SQL should not
    travel that way (the migration runner's statements from .sql files are the one exception)."""

    def __init__(self, source: str, where: str) -> None:
        self.tree = ast.parse(source)
        self.where = where
        self.assignments: dict[str, list[ast.expr]] = {}
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        self.assignments.setdefault(target.id, []).append(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value:
                self.assignments.setdefault(node.target.id, []).append(node.value)

    def findings(self) -> list[Finding]:
        found = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call) and node.args and self._is_sql_call(node.func):
                found += [Finding(self.where, node.lineno, why) for why in self._built(node.args[0], set())]
        return found

    @staticmethod
    def _is_sql_call(func: ast.expr) -> bool:
        if isinstance(func, ast.Name):
            return func.id in SQL_FUNCTIONS
        return isinstance(func, ast.Attribute) and func.attr in SQL_METHODS

    def _built(self, node: ast.expr, seen: set[str]) -> list[str]:
        """Why `node` is formatted SQL (empty when it is not)."""
        if isinstance(node, ast.JoinedStr):
            return ["an f-string"] if any(isinstance(v, ast.FormattedValue) for v in node.values) else []
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            return ["% formatting"]
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if self._static(node.left, seen) and self._static(node.right, seen):
                return []
            return ["+ concatenation"]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("format", "format_map", "join", "replace"):
                return [f".{node.func.attr}()"]
            return self._built(node.func.value, seen)  # text("...").bindparams(...)
        if isinstance(node, ast.IfExp):
            return self._built(node.body, seen) + self._built(node.orelse, seen)
        if isinstance(node, ast.Name) and node.id not in seen:
            values = self.assignments.get(node.id, [])
            return [why for value in values for why in self._built(value, seen | {node.id})]
        return []

    def _static(self, node: ast.expr, seen: set[str]) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self._static(node.left, seen) and self._static(node.right, seen)
        if isinstance(node, ast.Name) and node.id not in seen:
            values = self.assignments.get(node.id, [])
            return bool(values) and all(self._static(v, seen | {node.id}) for v in values)
        return False


def sql_formatting(source: str, where: str = "<snippet>") -> list[Finding]:
    return _SqlFormattingCheck(source, where).findings()


def service_modules() -> list[Path]:
    return sorted((ROOT / "service").rglob("*.py"))


def test_no_module_of_the_service_builds_sql_by_string_formatting() -> None:
    modules = service_modules()
    assert any(p.name == "repository.py" for p in modules)
    findings = [f for path in modules for f in sql_formatting(path.read_text(), str(path.relative_to(ROOT)))]
    assert [str(f) for f in findings] == []


def test_the_check_sees_sql_calls_in_every_repository() -> None:
    # It reads what it should: every repository passes SQL to one of the calls it checks.
    for path in (ROOT / "service").rglob("repository.py"):
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _SqlFormattingCheck._is_sql_call(n.func)]
        assert calls, path


@pytest.mark.parametrize(
    ("snippet", "why"),
    [
        ("q = text(f\"SELECT * FROM users WHERE name = '{name}'\")", "an f-string"),
        ("conn.execute(text(\"SELECT * FROM users WHERE name = '%s'\" % name))", "% formatting"),
        ('conn.exec_driver_sql("DELETE FROM {} WHERE id = 1".format(table))', ".format()"),
        ('conn.execute(text("SELECT * FROM users WHERE name = \'" + name + "\'"))', "+ concatenation"),
        ('SQL = f"SELECT {column} FROM users"\nconn.execute(text(SQL))', "an f-string"),
        ('def f(conn, name):\n    sql = "SELECT 1 WHERE x = " + name\n    return conn.execute(sql)', "+ concatenation"),
        ('q = text(A if flag else f"SELECT {x}")\nA = "SELECT 1"', "an f-string"),
        ('cursor.executescript(" ".join(parts))', ".join()"),
        ('q = sqlalchemy.text("SELECT %(x)s" % {"x": x})', "% formatting"),
        ('stmt = text(f"SELECT {x}").bindparams(bindparam("y"))', "an f-string"),
    ],
)
def test_the_check_finds_sql_built_by_formatting(snippet: str, why: str) -> None:
    assert [f.why for f in sql_formatting(snippet)] == [why]


@pytest.mark.parametrize(
    "snippet",
    [
        'SELECT_USER = text("SELECT * FROM users WHERE id = :id")\nconn.execute(SELECT_USER, {"id": 1})',
        'q = text("SELECT a " "FROM b")',
        'q = text("SELECT a " + "FROM b")',
        'BASE = "SELECT a FROM b"\nq = text(BASE + " WHERE c = :c")',
        'q = text("SELECT 1 WHERE x IN :ids").bindparams(bindparam("ids", expanding=True))',
        'cur.execute("PRAGMA foreign_keys = ON")',
        "conn.exec_driver_sql(WRITE if write else READ)\nWRITE = 'BEGIN IMMEDIATE'\nREAD = 'BEGIN'",
        'conn.execute(text(f"SELECT 1"))',
        "pipe.execute()",
    ],
)
def test_the_check_accepts_whole_statements_with_bound_parameters(snippet: str) -> None:
    assert sql_formatting(snippet) == []
