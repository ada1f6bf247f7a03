"""docs/configuration.md lists exactly the environment variables the service reads.

The variables come from the code, not from a second list: `config/settings.py`'s `ENV_OVERRIDES`
plus what `load()` reads from its `env` argument, every `os.environ` read in `gunicorn.conf.py`
and `service/` (found with `ast`, so a new `os.environ.get("X")` is seen without anyone updating
this test), and the settings the domains declare next to their routes (rate limits).
The table is the first Markdown table of docs/configuration.md; a row may name several
variables (`PORT` / `HOST` / `BIND`).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from config import settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"

# Read by a library, not by our code: gevent reads these in every worker (its monitor thread).
READ_BY_LIBRARIES = {"GEVENT_MONITOR_THREAD_ENABLE", "GEVENT_MAX_BLOCKING_TIME"}


def _is_os_environ(node: ast.expr) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def _names_read(tree: ast.AST, mapping: ast.expr | None = None) -> set[str]:
    """String keys read from os.environ (or from `mapping`'s name): .get(), .setdefault(), [...], `in`."""

    def is_source(node: ast.expr) -> bool:
        if _is_os_environ(node):
            return True
        return isinstance(mapping, ast.Name) and isinstance(node, ast.Name) and node.id == mapping.id

    found: set[str] = set()
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in ("get", "setdefault") and is_source(node.func.value) and node.args:
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and is_source(node.value):
            key = node.slice
        elif isinstance(node, ast.Compare) and len(node.comparators) == 1 and is_source(node.comparators[0]):
            key = node.left
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            found.add(key.value)
    return found


def variables_read() -> set[str]:
    """Every environment variable the service, its settings and its gunicorn config read."""
    names = set(settings.ENV_OVERRIDES)
    names |= _names_read(ast.parse((ROOT / "config" / "settings.py").read_text()), ast.Name(id="env"))
    for path in [ROOT / "gunicorn.conf.py", *sorted((ROOT / "service").rglob("*.py"))]:
        names |= _names_read(ast.parse(path.read_text()))
    names |= declared_by_domains()
    # Leading underscore: state the gunicorn master hands to itself across a reload, not a setting.
    return {name for name in names if not name.startswith("_")} | READ_BY_LIBRARIES


def declared_by_domains() -> set[str]:
    """The settings the registered blueprints declare (each rate limit names its own variable)."""
    from flask import Flask

    from service import register_api
    from service.security import ratelimit

    app = Flask(__name__, static_folder=None)
    app.config.update(settings.load({}))
    register_api(app)
    return {declared.name for rule in ratelimit.rules_of(app) for declared in rule.settings()}


def variables_documented() -> set[str]:
    """The backticked upper-case names in the first column of the first table of docs/configuration.md."""
    rows: list[str] = []
    for line in DOC.read_text().splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    names: set[str] = set()
    for row in rows[2:]:  # header and separator
        first_cell = row.split("|")[1]
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", first_cell))
    return names


def test_variables_read_are_found_in_code():
    read = variables_read()
    assert {"DATABASE_URL", "APP_ENV", "WEB_CONCURRENCY", "ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR"} <= read


def test_every_variable_read_is_in_the_configuration_table():
    missing = sorted(variables_read() - variables_documented())
    assert not missing, f"add to the table in docs/configuration.md: {missing}"


def test_the_configuration_table_lists_only_variables_something_reads():
    unread = sorted(variables_documented() - variables_read())
    assert not unread, f"nothing reads these, remove them from docs/configuration.md (or read them): {unread}"
