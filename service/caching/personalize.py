"""Per-viewer facts merged into shared, viewer-independent responses.

A shared cache entry is `<ids>\\n<body>`: the body is what an anonymous reader gets (every flag
false) and the ids line maps, per fact, the names of the objects it flags to their row ids:
`{"a": {"<slug>": 12}, "u": {"<username>": 3}}`. A domain declares its facts (`Fact`: the flag,
the body field that names an object, and the statement that finds the flagged ids) and passes
them when it writes and reads an entry; this module knows no response shape. For a signed-in
reader one batched statement, on primary keys only, finds every fact of the entry at once, and
each object of the body that a fact names gets its flag set in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, Integer, TextClause, bindparam, literal, select, union_all

from service.api.endpoint import encode
from service.storage.db import get_db


@dataclass(frozen=True)
class Fact:
    """A per-viewer flag, such as `favorited` on an article or `following` on a profile.

    `name` keys its ids in an entry (short: it is stored with every entry); `match` is the body
    field that names a flagged object (its value is what the entry maps to a row id); `field` is
    the flag set on that object; `query` selects, among the expanding `:ids`, the ids for which
    the flag holds for `:viewer`, as one column `id`.
    """

    name: str
    match: str
    field: str
    query: TextClause


def shared(payload: Any, marks: Mapping[Fact, Iterable[tuple[str, int]]] | None = None) -> bytes:
    """A cache entry for `payload`: per fact, its (name in the body, row id) pairs; a newline; the JSON body."""
    header: dict[str, dict[str, int]] = {}
    for fact, pairs in (marks or {}).items():
        if fact.name in header:
            raise ValueError(f"two facts named {fact.name!r} in one entry")
        header[fact.name] = dict(pairs)
    return orjson.dumps(header) + b"\n" + encode(payload)


def viewer_facts(conn: Connection, viewer: int, wanted: list[tuple[Fact, list[int]]]) -> list[set[int]]:
    """For each (fact, ids): the ids among them for which the fact holds for `viewer`, in one statement."""
    parts = []
    for index, (fact, ids) in enumerate(wanted):
        found = fact.query.bindparams(
            bindparam("viewer", viewer, type_=BigInteger, unique=True),
            bindparam("ids", ids, type_=BigInteger, expanding=True, unique=True),
        )
        rows = found.columns(id=BigInteger).subquery()
        parts.append(select(literal(index, Integer).label("kind"), rows.c.id))
    statement = parts[0] if len(parts) == 1 else union_all(*parts)
    held: list[set[int]] = [set() for _ in wanted]
    for kind, row_id in conn.execute(statement):
        held[kind].add(row_id)
    return held


def personalize(entry: bytes, viewer: int | None, facts: Iterable[Fact] = (), conn: Connection | None = None) -> bytes:
    """The body of a `shared()` entry as `viewer` sees it; `facts` are those the entry may name. Uses `conn` when given.

    KeyError when the entry names a fact that is not among `facts` (a flag would silently stay false)."""
    header, _, body = entry.partition(b"\n")
    ids: dict[str, dict[str, int]] = orjson.loads(header)
    if viewer is None or not any(ids.values()):
        return body
    by_name = {fact.name: fact for fact in facts}
    wanted = [(by_name[name], names) for name, names in ids.items() if names]
    pairs = [(fact, list(names.values())) for fact, names in wanted]
    if conn is None:
        with get_db().read() as own:
            held = viewer_facts(own, viewer, pairs)
    else:
        held = viewer_facts(conn, viewer, pairs)
    doc = orjson.loads(body)
    _flag(doc, [(fact, names, found) for (fact, names), found in zip(wanted, held, strict=True)])
    return orjson.dumps(doc)


def _flag(node: Any, rules: list[tuple[Fact, dict[str, int], set[int]]]) -> None:
    """Set each fact's flag on every object of `node` (at any depth) that the fact names."""
    checks = [(fact.match, fact.field, names, found) for fact, names, found in rules]
    if type(node) is dict:
        _walk(node, checks)
    elif type(node) is list:
        _walk({"": node}, checks)


def _walk(node: dict[str, Any], checks: list[tuple[str, str, dict[str, int], set[int]]]) -> None:
    """A walk of the whole document, so no response shape is known here; kept tight (exact type
    checks, lists of scalars skipped), as it runs on every signed-in read of a cached entry."""
    for match, field, names, found in checks:
        name = node.get(match)
        if type(name) is str and name in names:
            node[field] = names[name] in found
    for value in node.values():
        kind = type(value)
        if kind is dict:
            _walk(value, checks)
        elif kind is list and value and type(value[0]) in (dict, list):  # not a list of scalars (tagList)
            for item in value:
                if type(item) is dict:
                    _walk(item, checks)
                elif type(item) is list:
                    _walk({"": item}, checks)
