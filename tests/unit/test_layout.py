"""The shape of service/: its import graph points one way and never reaches bench/ or tests/.

Imports are read with `ast` (module level, inside functions and under TYPE_CHECKING alike), so a
cycle that only shows at run time in some code path is caught here, not in production.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SERVICE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in SERVICE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name].update(alias.name for alias in node.names)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_service_has_no_import_cycles() -> None:
    # The app factory (service/__init__.py) imports every package to assemble the app; nothing else
    # may import it back, so it is left out of the graph.
    graph = {name: targets - {"service"} for name, targets in _imports().items() if name != "service"}
    assert _cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_service_never_imports_the_benchmark_or_the_tests() -> None:
    offenders = {
        name: sorted(t for t in targets if t.split(".")[0] in ("bench", "tests", "ops", "tools"))
        for name, targets in _imports().items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_cross_cutting_code_lives_in_packages_not_flat_modules() -> None:
    flat = sorted(p.name for p in SERVICE.glob("*.py") if p.name not in ("__init__.py", "cli.py"))
    assert flat == []
