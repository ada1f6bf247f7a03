"""Per-viewer facts merged into shared, viewer-independent responses.

A shared cache entry is `<header>\\n<body>`: the body is what an anonymous reader gets (every flag
false) and the header says, per fact, which row each flag of the body belongs to and where the flag
is: `{"a": [["12", 341], ...], "u": [["3", 420], ...]}` (row id, byte offset of its `false`). A
domain declares its facts (`Fact`: the flag, the body field that names an object, and the
statements that find the flagged ids) and passes them when it writes and reads an entry; this
module knows no response shape. Setting a flag writes `true ` over `false` (JSON allows the
space), so the body keeps its length and no flag moves another: a signed-in read costs a few
slice assignments, not a parse of the body.

Where the flags come from, cheapest first (`service.caching.cache.cached`):
- the viewer's set of flagged ids for the fact, kept in the shared cache under the viewer's own
  generation (bumped by the viewer's own writes, e.g. a favorite) and read in the same Redis round
  trip as the entry (`SharedCache.fetch_viewer`); rebuilt from the database when missing;
- one batched statement on primary keys (`viewer_facts`) when the fact keeps no set, the viewer's
  set is too large to keep (MAX_SET), or there is no shared cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import BigInteger, Connection, Integer, TextClause, bindparam, literal, select, union_all

from service.api.endpoint import encode
from service.storage.db import get_db

# The most ids a viewer's set keeps in the cache; a viewer past it gets their flags by statement.
MAX_SET = 10_000
# Flags of one fact for one entry, in the order of the entry's header (None: not known here).
Flags = list[bool] | None


@dataclass(frozen=True)
class Fact:
    """A per-viewer flag, such as `favorited` on an article or `following` on a profile.

    `name` keys its ids in an entry (short: it is stored with every entry); `match` is the body
    field that names a flagged object (its value is what the entry maps to a row id); `field` is
    the flag set on that object; `query` selects, among the expanding `:ids`, the ids for which
    the flag holds for `:viewer`, as one column `id`.

    With `members` (every id for which the flag holds for `:viewer`, one column `id`) and
    `generation` (the name of the viewer's generation, bumped after each of their writes that
    changes the flag), the viewer's set is kept in the shared cache and a signed-in read of a
    cached entry runs no statement.
    """

    name: str
    match: str
    field: str
    query: TextClause
    members: TextClause | None = None
    generation: Callable[[int], str] | None = None

    @property
    def kept(self) -> bool:
        """Whether the viewer's set of this fact is kept in the shared cache."""
        return self.members is not None and self.generation is not None


@dataclass(frozen=True)
class Count:
    """A number that many entries show and that changes often, such as `favoritesCount` on an article.

    Rather than drop every entry that shows it, a write that changes it bumps only the object's
    count generation (`<prefix><id>`); an entry records the generation its number was read
    under, and a read whose generation moved on takes the number from a small entry of its own
    (service.caching.cache). `match` is the body field that names the object, `field` the number,
    `query` selects `id` and `n` (the number) for the expanding `:ids`.
    """

    prefix: str
    match: str
    field: str
    query: TextClause

    def generation(self, row_id: int) -> str:
        return f"{self.prefix}{row_id}"


# The header's key for counts: [[generation, offset, digits, generation value or "0"], ...].
COUNTS = "#"
# Count by generation prefix: every Count declared (a cache read resolves a count's statement from its name).
DECLARED_COUNTS: dict[str, Count] = {}


def count(prefix: str, match: str, field: str, query: TextClause) -> Count:
    """Declare a `Count` (its prefix names it in every entry, so it is unique)."""
    declared = Count(prefix, match, field, query)
    if DECLARED_COUNTS.setdefault(prefix, declared) is not declared:
        raise ValueError(f"a count with the generation prefix {prefix!r} is declared twice")
    return declared


def shared(
    payload: Any,
    marks: Mapping[Fact, Iterable[tuple[str, int]]] | None = None,
    counts: Mapping[Count, Iterable[tuple[str, int]]] | None = None,
) -> bytes:
    """A cache entry for `payload`: per fact, the row id and body offset of each flag; per count, where
    each number is; a newline; the JSON body.

    `marks` maps each fact to (name in the body, row id) pairs. Every flag of a fact in the body
    must be false (the anonymous view): ValueError otherwise, as a flag would be lost. `counts`
    maps each count to (name in the body, row id) pairs likewise; their generations are recorded
    when the entry is stored (`stamp`).
    """
    body = encode(payload)
    header: dict[str, list[Any]] = {}
    doc = orjson.loads(body) if marks or counts else None
    for kind, pairs in (counts or {}).items():
        ids = dict(pairs)
        if not ids:
            continue
        numbers = list(re.finditer(b'"' + re.escape(kind.field.encode()) + rb'":(-?\d+)', body))
        objects = list(_holders(doc, kind.field))
        if len(numbers) != len(objects):
            raise ValueError(f"every {kind.field!r} of a shared entry must be an integer")
        header.setdefault(COUNTS, []).extend(
            [kind.generation(ids[name]), m.start(1), m.end(1) - m.start(1), "0"]
            for name, m in zip((o.get(kind.match) for o in objects), numbers, strict=True)
            if name in ids
        )
    for fact, pairs in (marks or {}).items():
        if fact.name in header:
            raise ValueError(f"two facts named {fact.name!r} in one entry")
        ids = dict(pairs)
        needle = b'"' + fact.field.encode() + b'":'
        offsets = [m.end() for m in re.finditer(re.escape(needle), body)]
        objects = list(_holders(doc, fact.field))
        if len(offsets) != len(objects) or any(body[at : at + 5] != b"false" for at in offsets):
            raise ValueError(f"every {fact.field!r} of a shared entry must be false")
        header[fact.name] = [
            (str(ids[name]), at)
            for name, at in zip((o.get(fact.match) for o in objects), offsets, strict=True)
            if name in ids
        ]
    return orjson.dumps(header) + b"\n" + body


def _holders(node: Any, field: str) -> Iterator[dict[str, Any]]:
    """The objects of `node` that have `field`, in the order the field appears in the encoded JSON."""
    if type(node) is dict:
        for key, value in node.items():
            if key == field:
                yield node
            elif type(value) in (dict, list):
                yield from _holders(value, field)
    elif type(node) is list:
        for item in node:
            if type(item) in (dict, list):
                yield from _holders(item, field)


def split(entry: bytes) -> tuple[bytes, bytes, bytes]:
    """(the lines a domain keeps in front, the header line, the body) of a stored entry.

    The header is the first line that starts with `{`: a domain's own lines in front of it (e.g. a
    count, service/comments) never do."""
    at = 0 if entry.startswith(b"{") else entry.index(b"\n{") + 1
    end = entry.index(b"\n", at)
    return entry[:at], entry[at:end], entry[end + 1 :]


def render(
    entry: bytes,
    viewer: int | None,
    facts: Iterable[Fact],
    flags: Mapping[str, Flags],
    numbers: Mapping[int, int],
) -> bytes:
    """The stored `entry` as `viewer` sees it, without its header: the flags in `flags` set, those of
    the other facts found by statement, and the numbers of the counts that moved on spliced in."""
    front, line, body = split(entry)
    if viewer is None and not numbers:
        return front + body
    header = orjson.loads(line)
    if viewer is not None:
        body = flag(body, header, {name: held for name, held in flags.items() if held is not None})
        unknown = {
            name: marks for name, marks in header.items() if marks and name != COUNTS and flags.get(name) is None
        }
        if unknown:
            body = by_statement(body, unknown, viewer, facts)
    if numbers:
        body = splice(body, header[COUNTS], numbers)
    return front + body


def current_counts(conn: Connection, generations: Iterable[str]) -> dict[str, int]:
    """The current number of each count generation (`<prefix><id>`), one statement per kind of count.

    A generation whose row is gone is left out."""
    wanted: dict[str, list[int]] = {}
    for name in generations:
        prefix = next(p for p in DECLARED_COUNTS if name.startswith(p))
        wanted.setdefault(prefix, []).append(int(name[len(prefix) :]))
    numbers: dict[str, int] = {}
    for prefix, ids in wanted.items():
        kind = DECLARED_COUNTS[prefix]
        statement = kind.query.bindparams(bindparam("ids", ids, type_=BigInteger, expanding=True))
        for row_id, number in conn.execute(statement):
            numbers[kind.generation(row_id)] = int(number)
    return numbers


def splice(body: bytes, marks: list[list[Any]], numbers: Mapping[int, int]) -> bytes:
    """`body` with the number of count mark i replaced by numbers[i] (the body may change length)."""
    parts: list[bytes] = []
    at = 0
    for index in sorted(numbers, key=lambda i: marks[i][1]):
        start, digits = marks[index][1], marks[index][2]
        parts += [body[at:start], b"%d" % numbers[index]]
        at = start + digits
    parts.append(body[at:])
    return b"".join(parts)


def flag(body: bytes, header: Mapping[str, list[list[Any]]], flags: Mapping[str, list[bool]]) -> bytes:
    """`body` with the flags of each fact in `flags` set where they are true (same length)."""
    patched: bytearray | None = None
    for name, held in flags.items():
        for (_, at), on in zip(header.get(name, ()), held, strict=False):
            if on:
                if patched is None:
                    patched = bytearray(body)
                patched[at : at + 5] = b"true "
    return body if patched is None else bytes(patched)


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


def members(conn: Connection, fact: Fact, viewer: int) -> list[int] | None:
    """Every id for which `fact` holds for `viewer`; None past MAX_SET (the set is not kept then)."""
    assert fact.members is not None
    ids = [row[0] for row in conn.execute(fact.members, {"viewer": viewer}).fetchmany(MAX_SET + 1)]
    return None if len(ids) > MAX_SET else ids


def by_statement(
    body: bytes,
    header: Mapping[str, list[list[Any]]],
    viewer: int,
    facts: Iterable[Fact],
    conn: Connection | None = None,
) -> bytes:
    """`body` as `viewer` sees it, its facts found with one statement (on `conn` when given).

    KeyError when the header names a fact that is not among `facts` (a flag would silently stay false)."""
    by_name = {fact.name: fact for fact in facts}
    wanted = [(by_name[name], pairs) for name, pairs in header.items() if pairs and name != COUNTS]
    if not wanted:
        return body
    asked = [(fact, sorted({int(row_id) for row_id, _ in pairs})) for fact, pairs in wanted]
    if conn is None:
        with get_db().read(viewer) as own:
            held = viewer_facts(own, viewer, asked)
    else:
        held = viewer_facts(conn, viewer, asked)
    flags = {
        fact.name: [int(row_id) in found for row_id, _ in pairs]
        for (fact, pairs), found in zip(wanted, held, strict=True)
    }
    return flag(body, header, flags)


def personalize(entry: bytes, viewer: int | None, facts: Iterable[Fact] = (), conn: Connection | None = None) -> bytes:
    """The body of a `shared()` entry as `viewer` sees it, by statement (on `conn` when given).

    For a write's answer inside its transaction; reads of the cache go through `cache.cached`."""
    _, line, body = split(entry)
    if viewer is None:
        return body
    return by_statement(body, orjson.loads(line), viewer, facts, conn)
