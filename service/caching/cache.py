"""The shared cache: versioned keys, encoded JSON bytes, and failing open.

Each domain declares its own keys (`key_family`, e.g. service/articles/cache_keys.py)
and the generations they depend on; this module keeps the mechanism. Correctness after
writes comes from generation counters, not deletes: a reader reads the generations *before* it reads the
database and stores under a key that contains them; a writer bumps them
*after* its commit. A reader that loaded the old row just before a commit can
only store it under the old generation, which nobody asks for again. Deleting
keys instead (even after commit) lets such a reader put the old value back.

Values are response bytes (never pickle) holding only what is the same for
every viewer; per-viewer flags are merged in per request, from each viewer's
sets kept under the viewer's own generations and read in the same round trip
(`fetch_viewer`, service.caching.personalize). A number that changes often
(`favoritesCount`) has its own count generation: an entry records the value
of it its number was read under (`_stamp`), and a read whose count generation
moved on takes the number from the count's small entry instead of the entry
being dropped. A filled entry of 1 KB or more also gets its gzip variant
(service.caching.encoding). Redis trouble costs at most one short timeout per
breaker period per worker: reads then go to the database.

When Redis fails (down, restarted, frozen), a bump may be lost while the old
entries survive, and another worker whose breaker closes first would serve
them. So every key also carries a global epoch, and a worker that saw any
Redis failure bumps the epoch, with its pending bumps, before it uses the
cache again; a background greenlet sends them the moment Redis answers. The
epoch is a generation like the others (see below), so an empty restart never
reuses a number.

Generations never go backwards. They can be lost: on Redis they expire, can be
evicted (maxmemory) or vanish with an emptied Redis; in-process they sit in a
dict bounded by CACHE_THRESHOLD, apart from the entries (SimpleCache evicts
what expires first, so long-lived counters among the entries would crowd them
out). A counter that restarted from 0 would climb back to a number an old
entry is still stored under and serve it after a write. So no generation is a
count from 0: every value it takes comes from a clock that is past every value
it could have held before (`_next_generation` in-process, READ_SCRIPT and
BUMP_SCRIPT on Redis). Losing a generation then only ever orphans the entries
stored under it.

What this leaves uncovered: a count generation bumped while an entry that
shows the count was loading and evicted (maxmemory) before that entry was
stored (`_stamp` then records the generation it restarted at); a worker or
replica that saw no failure can read an old entry from the moment Redis
answers until a failed worker's retry lands
(one FLUSH_RETRY_SECONDS), or until the TTL if every worker that saw the
failure died first; a Redis restored from an old snapshot (run the cache with
`save ""`); and a generation lost while Redis's clock stepped back by more
than the time since its last bump.

With read replicas (DATABASE_REPLICA_URLS) a miss could read a replica that has not replayed the
write behind the bump and store the old row under the new generation. So a bump also records the
commit's WAL position next to each generation, and a miss fills only from a database that replayed
past the highest of them (READ_SCRIPT, `_load_above`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, NamedTuple

import gevent
import orjson
import redis
from cachelib.serializers import BaseSerializer
from flask import Flask, current_app, g, has_app_context
from flask_caching import Cache as FlaskCache
from gevent.event import AsyncResult

from service.api.errors import Overloaded
from service.caching import encoding
from service.caching.keys import EPOCH, Key
from service.caching.keys import key_family as key_family  # declared here for the domains: cache.key_family
from service.caching.personalize import COUNTS, Fact, Flags, current_counts, members, render, split
from service.caching.scripts import (
    BUMP_FLOOR_SCRIPT,
    BUMP_SCRIPT,
    CLAIM_SCRIPT,
    FILL_SCRIPT,
    FILL_SET_SCRIPT,
    READ_SCRIPT,
    STAMP_SCRIPT,
)
from service.runtime import metrics
from service.storage import redis_pool
from service.storage.db import get_db

log = logging.getLogger(__name__)

# Seconds between background retries of pending bumps while Redis is unreachable.
FLUSH_RETRY_SECONDS = 0.1
# Seconds between a waiting miss's looks at an entry another worker is filling.
FILL_POLL_SECONDS = 0.01


# A viewer's set marked too large to keep (service.caching.personalize.MAX_SET): flags by statement.
TOO_LARGE = "too large"
# A hit: (versioned key, entry, the viewer's flags per fact, the numbers of counts that moved on, by mark,
# whether the entry is its gzip variant).
Hit = tuple[str, bytes, dict[str, list[bool]], dict[int, int], bool]


class Found(NamedTuple):
    """What one read of an entry found (`SharedCache._find`)."""

    key: str  # the versioned key
    value: bytes | None  # the entry, None on a miss
    floor: int  # the LSN floor of its generations (0 without read replicas)
    moved: list[tuple[int, str, int | None]]  # counts whose generation moved on: (mark, small entry key, number)
    facts: list[Any]  # per kept fact: None (names nothing), a set key to build, TOO_LARGE, or the flags
    gzipped: bool = False  # value is the entry's gzip variant (service.caching.encoding)


class BytesSerializer(BaseSerializer):
    """Bytes as they are (marked '='), ints as ASCII (as the Lua scripts read and write them). No pickle."""

    def dumps(self, value: Any, protocol: int = 0) -> bytes:
        if type(value) is int:
            return str(value).encode("ascii")
        if isinstance(value, bytes):
            return b"=" + value
        raise TypeError(f"the cache stores bytes and ints, not {type(value).__name__}")

    def loads(self, value: bytes | None) -> Any:
        if value is None:
            return None
        if value.startswith(b"="):
            return value[1:]
        return int(value)


class _Script:
    """A Lua script run with EVALSHA on a pooled connection, loaded again on NOSCRIPT.

    redis-py's `Script.__call__` goes through `evalsha`'s deprecated-argument wrapper, and
    `execute_command` through its retry, timing and observability layers, on every call: about a
    tenth of a cached read's CPU in a profile (BENCHMARKS.md). The pools retry nothing anyway
    (service/storage/redis_pool.py), so this sends the command and reads the reply itself; the
    connection disconnects itself on a socket error or an interrupted read (redis-py's
    `send_packed_command` and `read_response`), and goes back to the pool either way.
    """

    def __init__(self, client: redis.Redis, source: str) -> None:
        self.client = client
        self.pool = client.connection_pool
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return self._run(keys, args)
        except redis.exceptions.NoScriptError:  # a Redis restarted or flushed since the last call
            self.sha = self.client.script_load(self.source)
            return self._run(keys, args)

    def _run(self, keys: list[str], args: list[Any]) -> Any:
        conn = self.pool.get_connection()  # raises ConnectionError("No connection available") when busy
        try:
            conn.send_command("EVALSHA", self.sha, len(keys), *keys, *args)  # type: ignore[no-untyped-call]
            return conn.read_response()
        finally:
            self.pool.release(conn)


def _redis_client(cfg: dict[str, Any], max_connections: int, pool_wait: float) -> redis.Redis:
    """A Redis client that fails fast and never opens more than its pool allows (service/storage/redis_pool.py)."""
    timeout = float(cfg["CACHE_SOCKET_TIMEOUT"])
    return redis.Redis(connection_pool=redis_pool.fail_fast_pool(cfg["REDIS_URL"], max_connections, pool_wait, timeout))


class SharedCache:
    """Versioned get/fill, generation bumps, a circuit breaker and single-flight."""

    def __init__(self, app: Flask) -> None:
        cfg = app.config
        self.ttl = int(cfg["CACHE_DEFAULT_TIMEOUT"])
        self.gen_ttl = int(cfg["CACHE_GENERATION_TTL"])
        self.breaker_seconds = float(cfg["CACHE_BREAKER_SECONDS"])
        self.fill_wait = float(cfg["CACHE_FILL_WAIT"])
        self.enabled = cfg["CACHE_TYPE"] != "NullCache"
        config: dict[str, Any] = {
            "CACHE_TYPE": cfg["CACHE_TYPE"],
            "CACHE_DEFAULT_TIMEOUT": self.ttl,
            "CACHE_KEY_PREFIX": cfg["CACHE_KEY_PREFIX"],
            "CACHE_THRESHOLD": int(cfg["CACHE_THRESHOLD"]),
            "CACHE_NO_NULL_WARNING": True,
        }
        if self.enabled:
            config["CACHE_SERIALIZER"] = BytesSerializer()
        if cfg["CACHE_TYPE"] == "RedisCache":
            # cachelib accepts a ready client as the "host".
            config["CACHE_REDIS_HOST"] = _redis_client(
                cfg, int(cfg["CACHE_MAX_CONNECTIONS"]), float(cfg["CACHE_POOL_WAIT"])
            )
        self._flask_cache = FlaskCache(app, config=config)
        # Looked up once: flask-caching's `cache` property resolves the app on every access.
        self._backend = app.extensions["cache"][self._flask_cache]
        self._prefix = self._backend._get_prefix() if hasattr(self._backend, "_get_prefix") else ""
        # LSN floors next to the generations, only with read replicas (see READ_SCRIPT).
        self.floors = bool(str(cfg.get("DATABASE_REPLICA_URLS") or "").strip())
        self._max_lsn = 0  # the highest commit LSN this worker bumped with (retries reuse it)
        client = getattr(self.backend, "_write_client", None)
        bump = BUMP_FLOOR_SCRIPT if self.floors else BUMP_SCRIPT
        self._read = _Script(client, READ_SCRIPT) if client is not None else None
        self._claim = _Script(client, CLAIM_SCRIPT) if client is not None else None
        self._fill = _Script(client, FILL_SCRIPT) if client is not None else None
        self._stamp_script = _Script(client, STAMP_SCRIPT) if client is not None else None
        self._fill_set = _Script(client, FILL_SET_SCRIPT) if client is not None else None
        # Invalidations get their own small pool with a longer wait, so a burst
        # of readers holding every connection cannot make a write skip its bump.
        self._bumper = _redis_client(cfg, 8, 2.0) if client is not None else None
        self._bump = _Script(self._bumper, bump) if self._bumper is not None else None
        # In-process generations (name -> value, least recently set first), kept
        # apart from the entries: SimpleCache evicts what expires first, so
        # long-lived counters in it would crowd out every entry. At most
        # CACHE_THRESHOLD of them; dropping one is safe (see _next_generation).
        self._local_gens: dict[str, int] = {}
        self._local_gens_max = max(int(cfg["CACHE_THRESHOLD"]), 1)
        self._last_generation = 0  # the last value _next_generation gave out
        self._open_until = 0.0
        self._inflight: dict[str, AsyncResult] = {}
        self._pending: set[str] = set()
        self._failures = 0  # Redis failures seen so far (a flush compares before and after)
        self._retrier: gevent.Greenlet[[], None] | None = None
        # Failure and hit counters of this process (exported by the metrics layer).
        self.stats = dict.fromkeys(
            ("hits", "misses", "errors", "bump_failures", "pool_busy", "fastpath", "fill_waits"), 0
        )

    @property
    def backend(self) -> Any:
        return self._backend

    def available(self) -> bool:
        return self.enabled and time.monotonic() >= self._open_until

    def _count(self, event: str) -> None:
        """One cache event, in this app's `stats` and in the process's Prometheus counters."""
        self.stats[event] += 1
        metrics.count_cache(event)

    def _failed(self, action: str, exc: Exception) -> bool:
        """Count a failed Redis call; True when it only found the pool busy (then nothing else happens).

        A busy pool is local congestion, not a Redis failure: the breaker stays
        closed, and a read sheds itself (`_shed`) rather than going to the
        database, which would turn overload into more load.
        """
        if isinstance(exc, redis.ConnectionError) and "No connection available" in str(exc):
            self._count("pool_busy")
            return True
        self._count("errors")
        self._open_until = time.monotonic() + self.breaker_seconds
        log.warning("cache %s failed (%s); bypassing the cache for %.1fs", action, exc, self.breaker_seconds)
        # Whatever this worker or another sent meanwhile may be lost: no cached
        # entry is trusted again until the epoch moved on.
        self._failures += 1
        self._pending.add(EPOCH)
        self._retry_in_background()
        return False

    def _shed(self, action: str, exc: Exception) -> None:
        """`_failed` for a read: raises Overloaded (503 + Retry-After) when the pool was busy."""
        if self._failed(action, exc):
            raise Overloaded() from None

    def _next_generation(self) -> int:
        """The next in-process generation value: microseconds, strictly increasing in this process.

        Every in-process generation value comes from here, and the entries die
        with the process, so a generation that was dropped starts again above
        every value it held: it never goes backwards (module doc).
        """
        self._last_generation = max(time.time_ns() // 1000, self._last_generation + 1)
        return self._last_generation

    def _set_local_generation(self, name: str) -> int:
        """Give in-process generation `name` a new value; drop the least recently set beyond the bound."""
        gens = self._local_gens
        gens.pop(name, None)
        value = gens[name] = self._next_generation()
        while len(gens) > self._local_gens_max:
            del gens[next(iter(gens))]
        return value

    def generations(self, names: list[str]) -> list[int] | None:
        """Current generation of each name (a missing one starts now); None when the cache is unavailable."""
        if not self.available():
            return None
        if self._read is None:
            return [self._local_gens.get(name) or self._set_local_generation(name) for name in names]
        prefix = self._prefix
        try:  # the read path's script, so missing generations start the same way
            args = [prefix + "generations", self.gen_ttl, len(names), 1 if self.floors else 0, prefix, "", 0]
            reply = self._read(keys=self._lookup_keys(prefix, names), args=args)
        except Exception as exc:
            self._failed("read", exc)
            return None
        return [int(g) for g in reply[0].decode().rsplit(":", 1)[1].split(".")]

    def _lookup_keys(self, prefix: str, names: list[str]) -> list[str]:
        keys = [prefix + "g:" + n for n in names]
        return keys + [prefix + "f:" + n for n in names] if self.floors else keys

    def _find(
        self,
        key_and_gens: Key,
        viewer: int | None = None,
        kept: Sequence[Fact] = (),
        count_misses: bool = True,
        gzip: bool = False,
    ) -> Found | None:
        """What one read of the entry finds (with the viewer's sets of `kept` facts; with `gzip`, for an
        anonymous reader, the gzip variant when the body needs no change); None when the cache is
        unavailable. One round trip on Redis (READ_SCRIPT).

        Raises Overloaded when every Redis connection stayed busy for CACHE_POOL_WAIT.
        """
        if not self.available() or (self._pending and not self._flush()):
            return None
        base, names = key_and_gens
        names = [EPOCH, *names]
        if self._read is None:
            return self._find_local(base, names, viewer, kept, count_misses, gzip and viewer is None)
        prefix = self._prefix
        keys = self._lookup_keys(prefix, names)
        gz = 1 if gzip and viewer is None else 0
        args = [prefix + base, self.gen_ttl, len(names), 1 if self.floors else 0, prefix, f"vs:{viewer}:", gz]
        if viewer is not None:
            keys += [prefix + "g:" + fact.generation(viewer) for fact in kept]  # type: ignore[misc]
            args += [fact.name for fact in kept]
        try:
            reply = self._read(keys=keys, args=args)
        except Exception as exc:
            self._shed("read", exc)
            return None
        value = self.backend.serializer.loads(reply[2]) if len(reply) > 2 and reply[2] is not None else None
        if value is not None or count_misses:
            self._count("hits" if value is not None else "misses")
        moved: list[tuple[int, str, int | None]] = []
        counts = reply[3] if len(reply) > 3 and reply[3] else []
        for at in range(0, len(counts), 3):
            number = counts[at + 2]
            moved.append((int(counts[at]) - 1, counts[at + 1].decode(), None if number is None else int(number)))
        if gz and len(reply) > 4 and reply[4] == 1:
            return Found(reply[0].decode()[len(prefix) :], value, int(reply[1]), moved, [], gzipped=True)
        facts: list[Any] = []
        replies = list(reply[4 : 4 + len(kept)]) if viewer is not None else []
        for reply_of_fact in replies + [None] * (len(kept) - len(replies)):
            if type(reply_of_fact) is list:
                facts.append(TOO_LARGE if reply_of_fact[-1] else [bool(on) for on in reply_of_fact[:-1]])
            else:
                facts.append(None if reply_of_fact is None else reply_of_fact.decode())
        return Found(reply[0].decode()[len(prefix) :], value, int(reply[1]), moved, facts)

    def _find_local(
        self, base: str, names: list[str], viewer: int | None, kept: Sequence[Fact], count_misses: bool, gzip: bool
    ) -> Found | None:
        """`_find` on the in-process backend: the same answers from this process's generations and entries."""
        gens = self.generations(names)
        if gens is None:
            return None
        key = base + ":" + ".".join(map(str, gens))
        # In-process entries see only this worker's bumps: its highest bump floor covers them all.
        floor = self._max_lsn if self.floors else 0
        value = self.get(key, count_misses)
        moved: list[tuple[int, str, int | None]] = []
        facts: list[Any] = []
        if value is None:
            return Found(key, value, floor, moved, facts)
        if viewer is None and b'"#":[' not in value:
            return self._gzipped_local(Found(key, value, floor, moved, facts), gzip)
        header = orjson.loads(split(value)[1])
        for index, mark in enumerate(header.get(COUNTS, ())):
            current = self._local_gens.get(mark[0]) or self._set_local_generation(mark[0])
            if str(current) != mark[3]:
                small = f"n:{mark[0]}:{gens[0]}.{current}"
                number = self.get(small, count_misses=False)
                moved.append((index, small, None if number is None else int(number)))
        for fact in kept if viewer is not None else ():
            marks = header.get(fact.name)
            if not marks:
                facts.append(None)
                continue
            assert viewer is not None and fact.generation is not None
            generation = fact.generation(viewer)
            mine = self._local_gens.get(generation) or self._set_local_generation(generation)
            set_key = f"vs:{viewer}:{fact.name}:{gens[0]}.{mine}"
            stored = self.get(set_key, count_misses=False)  # the ids, comma-separated; "-" when too many
            if stored is None:
                facts.append(set_key)
            elif stored == b"-":
                facts.append(TOO_LARGE)
            else:
                held = {int(i) for i in stored.split(b",") if i}
                facts.append([int(row_id) in held for row_id, _ in marks])
        found = Found(key, value, floor, moved, facts)
        return self._gzipped_local(found, gzip) if viewer is None and not moved else found

    def _gzipped_local(self, found: Found, gzip: bool) -> Found:
        """`found` with the entry's gzip variant, when asked for and stored (in-process)."""
        variant = self.get(found.key + encoding.SUFFIX, count_misses=False) if gzip else None
        return found if variant is None else found._replace(value=variant, gzipped=True)

    def lookup(
        self, key_and_gens: Key, viewer: int | None = None, facts: Sequence[Fact] = (), gzip: bool = False
    ) -> Hit | None:
        """A hit that needs nothing from the database: (versioned key, entry, the viewer's flags of each
        fact the entry names, the counts that moved on, whether the entry is its gzip variant: asked
        for with `gzip`); None otherwise, for a caller that then goes the full way (`fetch_viewer`,
        which counts the miss). Raises Overloaded when the pool stayed busy."""
        kept = [fact for fact in facts if fact.kept] if viewer is not None else []
        if len(kept) != len(facts) and viewer is not None:
            return None
        found = self._find(key_and_gens, viewer, kept, count_misses=False, gzip=gzip)
        if found is None or found.value is None:
            return None
        if found.gzipped:
            return found.key, found.value, {}, {}, True
        numbers: dict[int, int] = {}
        for index, _, number in found.moved:
            if number is None:
                return None
            numbers[index] = number
        flags: dict[str, list[bool]] = {}
        for fact, held in zip(kept, found.facts, strict=True):
            if type(held) is list:
                flags[fact.name] = held
            elif held is not None:
                return None  # a set to build, or one too large to keep
        return found.key, found.value, flags, numbers, False

    def fetch_viewer(
        self, key_and_gens: Key, load: Callable[[], bytes], viewer: int | None, facts: Sequence[Fact]
    ) -> tuple[bytes, dict[str, Flags], dict[int, int]]:
        """The entry of `key_and_gens` (`load()`'s, stored, on a miss); the flags of each kept fact the
        entry names for a signed-in `viewer`, per header id; the counts that moved on, by mark.

        A missing set of the viewer's or a count's small entry is loaded from the database here. A
        fact left out of the flags, or given None (no set kept, a miss, no cache), is the caller's to
        find by statement (service.caching.personalize.render).
        """
        kept = [fact for fact in facts if fact.kept] if viewer is not None else []
        found = self._find(key_and_gens, viewer, kept)
        if found is None:
            return load(), {}, {}
        if found.value is None:
            value, own = self._fill_miss(found.key, found.floor, load)
            if own or b'"#":[' not in value:
                return value, {}, {}
            # Another request's load (in this worker or another): it may have read a count before a
            # bump this read came after, and a count is not in the key. Read it again, as a hit.
            again = self._find(key_and_gens, viewer, kept)
            if again is None or again.value is None:
                return load(), {}, {}
            found = again
        entry = found.value
        assert entry is not None
        flags: dict[str, Flags] = {}
        for fact, held in zip(kept, found.facts, strict=True):
            if type(held) is list:
                flags[fact.name] = held
            elif held is TOO_LARGE:
                flags[fact.name] = None
            elif held is not None:  # the set's key: build it
                assert viewer is not None
                ids = self._build_set(held, fact, viewer)
                marks = orjson.loads(split(entry)[1])[fact.name]
                flags[fact.name] = None if ids is None else [int(row_id) in ids for row_id, _ in marks]
        numbers = {index: number for index, _, number in found.moved if number is not None}
        missing = [(index, small) for index, small, number in found.moved if number is None]
        if missing:
            numbers.update(self._load_numbers(entry, missing))
        return entry, flags, numbers

    def _build_set(self, set_key: str, fact: Fact, viewer: int) -> frozenset[int] | None:
        """Load `viewer`'s ids for `fact` and store them as the set `set_key`; None when too large.

        `set_key` carries the generations the read took before this load, so a set loaded just
        before the viewer's write is stored where nobody looks after it. The viewer's own reads see
        their writes (service/storage/db.py), so a read replica is as good as the primary here.
        """
        with get_db().read(viewer) as conn:
            ids = members(conn, fact, viewer)
        if self._fill_set is None:
            self.put(set_key, b"-" if ids is None else b",".join(b"%d" % i for i in ids))
        else:
            try:
                self._fill_set(keys=[set_key], args=[self.ttl, *(ids if ids is not None else ["-1"])])
            except Exception as exc:
                self._failed("write", exc)
        return None if ids is None else frozenset(ids)

    def _load_numbers(self, entry: bytes, missing: list[tuple[int, str]]) -> dict[int, int]:
        """The current numbers of the entry's counts at `missing` (mark index, small entry key), from the
        primary (read after their generations were), stored in their small entries."""
        marks = orjson.loads(split(entry)[1])[COUNTS]
        with get_db().read(primary=True) as conn:
            numbers = current_counts(conn, [marks[index][0] for index, _ in missing])
        found = {index: numbers[marks[index][0]] for index, _ in missing if marks[index][0] in numbers}
        smalls = {small: numbers[marks[index][0]] for index, small in missing if marks[index][0] in numbers}
        if self._read is None:
            for small, number in smalls.items():
                self.put(small, b"%d" % number)
        elif smalls:
            try:
                pipe = self.backend._write_client.pipeline(transaction=False)
                for small, number in smalls.items():
                    pipe.set(small, number, ex=self.ttl)
                pipe.execute()
            except Exception as exc:
                self._failed("write", exc)
        return found

    def count_fast_path(self) -> None:
        """One hit answered ahead of the framework (service.caching.fastpath)."""
        self._count("fastpath")

    def get(self, key: str, count_misses: bool = True) -> bytes | None:
        if not self.available():
            return None
        try:
            value: bytes | None = self.backend.get(key)
        except Exception as exc:
            self._shed("read", exc)
            return None
        if value is not None or count_misses:
            self._count("hits" if value is not None else "misses")
        return value

    def put(self, key: str, value: bytes) -> None:
        if not self.available():
            return
        try:
            self.backend.set(key, value, timeout=self.ttl)
        except Exception as exc:
            self._failed("write", exc)

    def bump(self, names: Iterable[str]) -> None:
        """Invalidate every entry versioned by `names`. Call after the write committed.

        Tried even while the breaker is open, so a read that timed out under load
        cannot cost a write its invalidation: with Redis hung, a write pays one
        socket timeout, reads pay one per breaker period. A bump that fails is kept and
        retried before this worker's next cache read; until it goes through,
        this worker reads from the database, and a background greenlet
        sends it as soon as Redis answers (see the module doc for the rest).
        """
        if not self.enabled:
            return
        if self.floors and has_app_context():
            self._max_lsn = max(self._max_lsn, int(g.get("db_write_lsn", 0)))
        self._pending.update(names)
        self._flush()

    def _flush(self) -> bool:
        """Send pending bumps; True when none are left."""
        if not self._pending:
            return True
        names = sorted(self._pending)
        try:
            self._send(names)
        except Exception as exc:
            self._pending.update(names)  # a concurrent flush may have taken them off
            self._count("bump_failures")
            log.error("cache invalidation of %s failed (%s); retrying before the next cache read", names, exc)
            self._failed("invalidation", exc)
            return False
        return not self._pending

    def _send(self, names: list[str]) -> None:
        """Bump `names` in one round trip and take them off the pending set; raises on failure."""
        failures = self._failures
        if self._bump is None:  # in-process backend
            for name in names:
                self._set_local_generation(name)
        elif self.floors:
            prefix = self._prefix
            self._bump(keys=self._lookup_keys(prefix, names), args=[self.gen_ttl, self._max_lsn])
        else:
            prefix = self._prefix
            self._bump(keys=[prefix + "g:" + name for name in names], args=[self.gen_ttl])
        self._pending.difference_update(names)
        if self._failures != failures:  # Redis failed meanwhile: this epoch may predate a loss
            self._pending.add(EPOCH)

    def _retry_in_background(self) -> None:
        if self._retrier is None or self._retrier.dead:
            self._retrier = gevent.spawn(self._retry_pending)

    def _retry_pending(self) -> None:
        """Send pending bumps as soon as Redis answers, then close the breaker.

        Quiet: the failure that started it was logged and counted already.
        """
        while self._pending:
            gevent.sleep(FLUSH_RETRY_SECONDS)
            names = sorted(self._pending)
            try:
                self._send(names)
            except Exception:
                self._pending.update(names)
                continue
            if not self._pending:
                self._open_until = 0.0
                log.warning("cache reachable again; invalidations sent, breaker closed")

    def fetch(self, key_and_gens: Key, load: Callable[[], bytes]) -> bytes:
        """The cached bytes for the key, or `load()`'s result stored under the current generations.

        For entries without counts (service.caching.personalize.Count; those are read with `cached`).
        Concurrent misses for one key in this worker share a single `load()`, and
        with Redis so do those of every worker and replica (`_load_once`). Raises
        Overloaded, before any `load()`, when the Redis pool stayed busy.
        """
        entry, _, numbers = self.fetch_viewer(key_and_gens, load, None, ())
        if numbers:
            raise ValueError("an entry with counts is read with cache.cached(), which applies them")
        return entry

    def _fill_miss(self, key: str, floor: int, load: Callable[[], bytes]) -> tuple[bytes, bool]:
        """`load()`'s result stored under versioned `key`: once per worker, and with Redis once across
        workers; and whether this caller's own `load()` made it (else another request's did)."""
        pending = self._inflight.get(key)
        if pending is not None:
            result: bytes = pending.get()
            return result, False
        pending = self._inflight[key] = AsyncResult()
        try:
            value, own = self._load_once(key, partial(self._load_above, floor, load) if floor else load, floor)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            self._inflight.pop(key, None)
        pending.set(value)
        return value, own

    @staticmethod
    def _load_above(floor: int, load: Callable[[], bytes]) -> bytes:
        """`load()` with its reads on a database that replayed up to `floor` (service/storage/db.py)."""
        if not has_app_context():
            return load()
        outer = g.get("db_fill_floor", 0)
        g.db_fill_floor = max(outer, floor)
        try:
            return load()
        finally:
            g.db_fill_floor = outer

    def _load_once(self, key: str, load: Callable[[], bytes], floor: int = 0) -> tuple[bytes, bool]:
        """`load()`'s result for versioned `key`, stored; at most one load at a time across workers.

        A short Redis lock per versioned key (SET NX PX with a token) elects the
        worker that loads; the others poll the same versioned key, so they only
        ever take a value stored under the generations they read. A winner that
        fails frees its lock and the next poll takes it over; one that died
        holds it at most CACHE_FILL_WAIT, after which the waiters load
        themselves. Redis errors fail open (load, as without a cache).
        """
        if self._claim is None or self._fill is None:  # in-process: this worker's single flight is enough
            started = time.time_ns() // 1000  # the clock in-process generations come from
            value = self._stamp(load(), started, floor)
            self.put(key, value)
            variant = encoding.compressed(value)
            if variant is not None:
                self.put(key + encoding.SUFFIX, variant)
            return value, True
        prefix = self._prefix
        keys = [prefix + key, prefix + "fill:" + key]
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self.fill_wait
        waited = False
        while True:
            try:
                reply = self._claim(keys=keys, args=[token, max(int(self.fill_wait * 1000), 1)])
            except Exception as exc:
                self._shed("read", exc)
                return load(), True  # Redis failed: fail open, the breaker is open now
            if reply[0] == 1:  # filled by another worker (the miss was counted already)
                filled: bytes = self.backend.serializer.loads(reply[1])
                return filled, False
            if reply[0] == 2:
                break
            if not waited:
                waited = True
                self._count("fill_waits")
            if time.monotonic() >= deadline:
                return self._load_and_fill(keys, None, load, int(reply[1]), floor), True  # the winner is slow or dead
            gevent.sleep(FILL_POLL_SECONDS)
        return self._load_and_fill(keys, token, load, int(reply[1]), floor), True

    def _load_and_fill(
        self, keys: list[str], token: str | None, load: Callable[[], bytes], started: int, floor: int
    ) -> bytes:
        """Load, store under keys[0] and free the fill lock keys[1] if `token` holds it (also when load fails).

        `started` is Redis's clock before the load began, `floor` the LSN it read at (for `_stamp`)."""
        try:
            value = self._stamp(load(), started, floor)
        except BaseException:
            if token is not None:
                self._fill_script(keys, [token])
            raise
        dumps = self.backend.serializer.dumps
        variant = encoding.compressed(value)
        if variant is None:
            self._fill_script(keys, [token or "", dumps(value), self.ttl])
        else:
            self._fill_script([*keys, keys[0] + encoding.SUFFIX], [token or "", dumps(value), self.ttl, dumps(variant)])
        return value

    def _stamp(self, entry: bytes, started: int, floor: int) -> bytes:
        """`entry` with the generation each of its counts was read under recorded in its header.

        A count's generation that moved after `started` (the clock before the load began) or, with
        read replicas, by a commit past the floor the load read at, may or may not be in the number
        loaded: it is recorded as "0", which no generation equals, so reads take the number from the
        count's small entry (STAMP_SCRIPT). Without counts the entry is returned as it is.
        """
        if b'"#":[' not in entry:
            return entry
        front, line, body = split(entry)
        if b'"#":[' not in line:
            return entry
        header = orjson.loads(line)
        marks = header[COUNTS]
        names = [mark[0] for mark in marks]
        recorded: list[Any] = ["0"] * len(marks)
        if self._stamp_script is None:
            if self.available():  # as STAMP_SCRIPT: a missing generation starts now and is recorded
                known = [self._local_gens.get(name) for name in names]
                recorded = [
                    str(self._set_local_generation(name)) if gen is None else str(gen) if gen < started else "0"
                    for name, gen in zip(names, known, strict=True)
                ]
        else:
            prefix = self._prefix
            try:
                args = [started, self.gen_ttl, floor, 1 if self.floors else 0]
                recorded = [v.decode() for v in self._stamp_script(keys=self._lookup_keys(prefix, names), args=args)]
            except Exception as exc:
                self._failed("write", exc)
        for mark, value in zip(marks, recorded, strict=True):
            mark[3] = value
        return front + orjson.dumps(header) + b"\n" + body

    def _fill_script(self, keys: list[str], args: list[Any]) -> None:
        if not self.available():
            return
        try:
            assert self._fill is not None
            self._fill(keys=keys, args=args)
        except Exception as exc:
            self._failed("write", exc)  # a busy pool: the value is in hand, the lock expires by itself


def cached(key: Key, load: Callable[[], bytes], viewer: int | None, facts: Iterable[Fact] = ()) -> bytes:
    """The shared entry of `key` (filled by `load` on a miss) as `viewer` sees it, without its header.

    Lines the domain keeps in front of the header (e.g. a count) are returned as they are.
    """
    facts = tuple(facts)
    entry, flags, numbers = get_cache().fetch_viewer(key, load, viewer, facts)
    return render(entry, viewer, facts, flags, numbers)


def init_app(app: Flask) -> SharedCache:
    if app.config["REDIS_URL"] and not redis_pool.HIREDIS_AVAILABLE:
        # Correct but slower (Python reply parsing and packing): worth a warning, not a refusal to start.
        log.warning("hiredis >= 3.2 is not installed: redis-py parses Redis replies in Python (pip install hiredis)")
        metrics.REDIS_PARSER_WORKERS.labels("python").set(1)
    cache = SharedCache(app)
    app.extensions["shared_cache"] = cache
    return cache


def get_cache() -> SharedCache:
    cache: SharedCache = current_app.extensions["shared_cache"]
    return cache
