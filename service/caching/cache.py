"""The shared cache: versioned keys, encoded JSON bytes, and failing open.

Each domain declares its own keys (`key_family`, e.g. service/articles/cache_keys.py)
and the generations they depend on; this module keeps the mechanism. Correctness after
writes comes from generation counters, not deletes: a reader reads the generations *before* it reads the
database and stores under a key that contains them; a writer bumps them
*after* its commit. A reader that loaded the old row just before a commit can
only store it under the old generation, which nobody asks for again. Deleting
keys instead (even after commit) lets such a reader put the old value back.

Values are response bytes (never pickle) holding only what is the same for
every viewer; per-viewer flags are merged in per request. Redis trouble costs
at most one short timeout per breaker period per worker: reads then go to the
database.

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
it could have held before (`_next_generation` in-process, LOOKUP_SCRIPT and
BUMP_SCRIPT on Redis). Losing a generation then only ever orphans the entries
stored under it.

What this leaves uncovered: a worker or replica that saw no failure can read
an old entry from the moment Redis answers until a failed worker's retry lands
(one FLUSH_RETRY_SECONDS), or until the TTL if every worker that saw the
failure died first; a Redis restored from an old snapshot (run the cache with
`save ""`); and a generation lost while Redis's clock stepped back by more
than the time since its last bump.

With read replicas (DATABASE_REPLICA_URLS) a miss could read a replica that has not replayed the
write behind the bump and store the old row under the new generation. So a bump also records the
commit's WAL position next to each generation, and a miss fills only from a database that replayed
past the highest of them (LOOKUP_FLOOR_SCRIPT, `_load_above`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, cast

import gevent
import redis
from cachelib.serializers import BaseSerializer
from flask import Flask, current_app, g, has_app_context
from flask_caching import Cache as FlaskCache
from gevent.event import AsyncResult

from service.api.errors import Overloaded
from service.caching.keys import EPOCH, Key
from service.caching.keys import key_family as key_family  # declared here for the domains: cache.key_family
from service.caching.personalize import Fact, Flags, by_statement, flag, header_of, members
from service.caching.scripts import (
    BUMP_FLOOR_SCRIPT,
    BUMP_SCRIPT,
    CLAIM_SCRIPT,
    FILL_SCRIPT,
    FILL_SET_SCRIPT,
    LOOKUP_FLOOR_SCRIPT,
    LOOKUP_SCRIPT,
    VIEW_SCRIPT,
)
from service.runtime import metrics
from service.storage import redis_pool
from service.storage.db import get_db

log = logging.getLogger(__name__)

# Seconds between background retries of pending bumps while Redis is unreachable.
FLUSH_RETRY_SECONDS = 0.1
# Seconds between a waiting miss's looks at an entry another worker is filling.
FILL_POLL_SECONDS = 0.01


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
        # LSN floors next to the generations, only with read replicas (see LOOKUP_FLOOR_SCRIPT).
        self.floors = bool(str(cfg.get("DATABASE_REPLICA_URLS") or "").strip())
        self._max_lsn = 0  # the highest commit LSN this worker bumped with (retries reuse it)
        client = getattr(self.backend, "_write_client", None)
        lookup, bump = (LOOKUP_FLOOR_SCRIPT, BUMP_FLOOR_SCRIPT) if self.floors else (LOOKUP_SCRIPT, BUMP_SCRIPT)
        self._lookup = client.register_script(lookup) if client is not None else None
        self._claim = client.register_script(CLAIM_SCRIPT) if client is not None else None
        self._fill = client.register_script(FILL_SCRIPT) if client is not None else None
        self._view = client.register_script(VIEW_SCRIPT) if client is not None else None
        self._fill_set = client.register_script(FILL_SET_SCRIPT) if client is not None else None
        # Invalidations get their own small pool with a longer wait, so a burst
        # of readers holding every connection cannot make a write skip its bump.
        self._bumper = _redis_client(cfg, 8, 2.0) if client is not None else None
        self._bump = self._bumper.register_script(bump) if self._bumper is not None else None
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
        return self._flask_cache.cache

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
        if self._lookup is None:
            return [self._local_gens.get(name) or self._set_local_generation(name) for name in names]
        prefix = self.backend._get_prefix()
        try:  # the read path's script, so missing generations start the same way
            reply = self._lookup(keys=self._lookup_keys(prefix, names), args=[prefix + "generations", self.gen_ttl])
        except Exception as exc:
            self._failed("read", exc)
            return None
        return [int(g) for g in reply[0].decode().rsplit(":", 1)[1].split(".")]

    def _lookup_keys(self, prefix: str, names: list[str]) -> list[str]:
        keys = [prefix + "g:" + n for n in names]
        return keys + [prefix + "f:" + n for n in names] if self.floors else keys

    def _find(self, base: str, names: list[str], count_misses: bool = True) -> tuple[str, bytes | None, int] | None:
        """(versioned key, its value or None, LSN floor of its generations); None when the cache is unavailable.

        Raises Overloaded when every Redis connection stayed busy for CACHE_POOL_WAIT.
        """
        if not self.available() or (self._pending and not self._flush()):
            return None
        names = [EPOCH, *names]
        if self._lookup is None:
            gens = self.generations(names)
            if gens is None:
                return None
            key = base + ":" + ".".join(map(str, gens))
            # In-process entries see only this worker's bumps: its highest bump floor covers them all.
            floor = self._max_lsn if self.floors else 0
            return key, self.get(key, count_misses), floor
        prefix = self.backend._get_prefix()
        try:
            reply = self._lookup(keys=self._lookup_keys(prefix, names), args=[prefix + base, self.gen_ttl])
        except Exception as exc:
            self._shed("read", exc)
            return None
        at = 2 if self.floors else 1  # where the value is (absent when nil)
        value = self.backend.serializer.loads(reply[at]) if len(reply) > at else None
        if value is not None or count_misses:
            self._count("hits" if value is not None else "misses")
        return reply[0].decode()[len(prefix) :], value, int(reply[1]) if self.floors else 0

    def lookup(self, key_and_gens: tuple[str, list[str]]) -> tuple[str, bytes] | None:
        """(versioned key, cached bytes) on a hit, in the same one round trip as `fetch`; None otherwise.

        For a caller that falls back to `fetch` on None: a miss is not counted here, `fetch` counts it.
        Raises Overloaded when the pool stayed busy (the caller answers 503 rather than `fetch`).
        """
        base, names = key_and_gens
        found = self._find(base, names, count_misses=False)
        if found is None or found[1] is None:
            return None
        return found[0], found[1]

    def fetch_viewer(
        self, key_and_gens: Key, load: Callable[[], bytes], viewer: int | None, facts: Sequence[Fact], lead: int = 0
    ) -> tuple[bytes, dict[str, Flags]]:
        """`fetch`, and for a signed-in `viewer` the flags of each kept fact the entry names, per header id.

        On Redis the viewer's sets are read in the same round trip as the entry; a missing one is
        built from the database (`_build_set`). A fact left out of the flags, or given None (no
        set kept, a miss, no cache), is the caller's to find by statement (service.caching.personalize).
        """
        kept = [fact for fact in facts if fact.kept] if viewer is not None else []
        if not kept:
            return self.fetch(key_and_gens, load), {}
        assert viewer is not None
        if self._view is None:  # in-process, or no cache
            local = self._find(*key_and_gens)
            if local is None:
                return load(), {}
            if local[1] is None:
                return self._fill_miss(local[0], local[2], load), {}
            return local[1], self._local_flags(local[1], viewer, kept, lead) or {}
        found = self._find_viewer(key_and_gens, viewer, kept, lead)
        if found is None:
            return self.fetch(key_and_gens, load), {}
        key, value, floor, replies = found
        if value is None:
            return self._fill_miss(key, floor, load), {}
        flags: dict[str, Flags] = {}
        header: dict[str, list[list[Any]]] | None = None
        for fact, reply in zip(kept, replies, strict=True):
            if type(reply) is list:
                flags[fact.name] = None if reply[-1] else [bool(on) for on in reply[:-1]]
            elif reply is not None:  # the set's key: build it
                header = header if header is not None else header_of(_split_lead(value, lead)[1])[0]
                held = self._build_set(reply.decode(), fact, viewer)
                flags[fact.name] = None if held is None else [int(i) in held for i, _ in header[fact.name]]
        return value, flags

    def lookup_viewer(
        self, key_and_gens: Key, viewer: int, facts: Sequence[Fact], lead: int = 0
    ) -> tuple[str, bytes, dict[str, list[bool]]] | None:
        """`lookup` for a signed-in viewer: (versioned key, entry, flags of every kept fact it names) on a
        hit whose flags are all in the cache; None otherwise (the caller goes the full way)."""
        kept = [fact for fact in facts if fact.kept]
        if len(kept) != len(facts):
            return None
        if self._view is None:  # in-process: only sets this process built already (no database here)
            local = self.lookup(key_and_gens)
            held = None if local is None else self._local_flags(local[1], viewer, kept, lead, build=False)
            if local is None or held is None or any(on is None for on in held.values()):
                return None
            return local[0], local[1], cast(dict[str, list[bool]], held)
        found = self._find_viewer(key_and_gens, viewer, kept, lead, count_misses=False)
        if found is None or found[1] is None:
            return None
        flags: dict[str, list[bool]] = {}
        for fact, reply in zip(kept, found[3], strict=True):
            if reply is None:
                continue
            if type(reply) is not list or reply[-1]:
                return None  # a set to build, or one too large to keep
            flags[fact.name] = [bool(on) for on in reply[:-1]]
        return found[0], found[1], flags

    def _find_viewer(
        self, key_and_gens: Key, viewer: int, kept: list[Fact], lead: int, count_misses: bool = True
    ) -> tuple[str, bytes | None, int, list[Any]] | None:
        """(versioned key, value or None, LSN floor, one reply per fact) in one round trip; None when unavailable."""
        if not self.available() or (self._pending and not self._flush()):
            return None
        base, names = key_and_gens
        names = [EPOCH, *names]
        prefix = self.backend._get_prefix()
        keys = self._lookup_keys(prefix, names)
        keys += [prefix + "g:" + fact.generation(viewer) for fact in kept]  # type: ignore[misc]
        args = [prefix + base, self.gen_ttl, len(names), 1 if self.floors else 0, f"{prefix}vs:{viewer}:", lead]
        try:
            assert self._view is not None
            reply = self._view(keys=keys, args=args + [fact.name for fact in kept])
        except Exception as exc:
            self._shed("read", exc)
            return None
        value = self.backend.serializer.loads(reply[2]) if len(reply) > 2 else None
        if value is not None or count_misses:
            self._count("hits" if value is not None else "misses")
        replies = list(reply[3:]) + [None] * (len(kept) - len(reply[3:]))
        return reply[0].decode()[len(prefix) :], value, int(reply[1]), replies

    def _build_set(self, set_key: str, fact: Fact, viewer: int) -> frozenset[int] | None:
        """Load `viewer`'s ids for `fact` and store them as the Redis set `set_key`; None when too large.

        `set_key` carries the generations the lookup read before this load, so a set loaded just
        before the viewer's write is stored where nobody looks after it. The viewer's own reads see
        their writes (service/storage/db.py), so a read replica is as good as the primary here.
        """
        with get_db().read(viewer) as conn:
            ids = members(conn, fact, viewer)
        try:
            assert self._fill_set is not None
            self._fill_set(keys=[set_key], args=[self.ttl, *(ids if ids is not None else ["-1"])])
        except Exception as exc:
            self._failed("write", exc)
        return None if ids is None else frozenset(ids)

    def _local_flags(
        self, entry: bytes, viewer: int, kept: list[Fact], lead: int, build: bool = True
    ) -> dict[str, Flags] | None:
        """`fetch_viewer`'s flags from this process's sets (the in-process backend); a missing set is
        loaded, or with `build` false the answer is None."""
        header = header_of(_split_lead(entry, lead)[1])[0]
        flags: dict[str, Flags] = {}
        for fact in kept:
            marks = header.get(fact.name)
            if not marks:
                continue
            gens = self.generations([EPOCH, fact.generation(viewer)])  # type: ignore[misc]
            if gens is None:
                return {}
            set_key = f"vs:{viewer}:{fact.name}:{gens[0]}.{gens[1]}"
            stored = self.get(set_key, count_misses=False)  # the ids, comma-separated; "-" when too many
            if stored is None:
                if not build:
                    return None
                with get_db().read(viewer) as conn:
                    ids = members(conn, fact, viewer)
                stored = b"-" if ids is None else b",".join(b"%d" % i for i in ids)
                self.put(set_key, stored)
            held = None if stored == b"-" else frozenset(int(i) for i in stored.split(b",") if i)
            flags[fact.name] = None if held is None else [int(i) in held for i, _ in marks]
        return flags

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
            prefix = self.backend._get_prefix()
            self._bump(keys=self._lookup_keys(prefix, names), args=[self.gen_ttl, self._max_lsn])
        else:
            prefix = self.backend._get_prefix()
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

        Concurrent misses for one key in this worker share a single `load()`, and
        with Redis so do those of every worker and replica (`_load_once`). Raises
        Overloaded, before any `load()`, when the Redis pool stayed busy.
        """
        base, names = key_and_gens
        found = self._find(base, names)
        if found is None:
            return load()
        key, value, floor = found
        if value is not None:
            return value
        return self._fill_miss(key, floor, load)

    def _fill_miss(self, key: str, floor: int, load: Callable[[], bytes]) -> bytes:
        """`load()`'s result stored under versioned `key`: once per worker, and with Redis once across workers."""
        pending = self._inflight.get(key)
        if pending is not None:
            result: bytes = pending.get()
            return result
        pending = self._inflight[key] = AsyncResult()
        try:
            value = self._load_once(key, partial(self._load_above, floor, load) if floor else load)
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            self._inflight.pop(key, None)
        pending.set(value)
        return value

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

    def _load_once(self, key: str, load: Callable[[], bytes]) -> bytes:
        """`load()`'s result for versioned `key`, stored; at most one load at a time across workers.

        A short Redis lock per versioned key (SET NX PX with a token) elects the
        worker that loads; the others poll the same versioned key, so they only
        ever take a value stored under the generations they read. A winner that
        fails frees its lock and the next poll takes it over; one that died
        holds it at most CACHE_FILL_WAIT, after which the waiters load
        themselves. Redis errors fail open (load, as without a cache).
        """
        if self._claim is None or self._fill is None:  # in-process: this worker's single flight is enough
            value = load()
            self.put(key, value)
            return value
        prefix = self.backend._get_prefix()
        keys = [prefix + key, prefix + "fill:" + key]
        token = secrets.token_hex(8)
        deadline = time.monotonic() + self.fill_wait
        waited = False
        while True:
            try:
                reply = self._claim(keys=keys, args=[token, max(int(self.fill_wait * 1000), 1)])
            except Exception as exc:
                self._shed("read", exc)
                return load()  # Redis failed: fail open, the breaker is open now
            if reply[0] == 1:  # filled by another worker (the miss was counted already)
                filled: bytes = self.backend.serializer.loads(reply[1])
                return filled
            if reply[0] == 2:
                break
            if not waited:
                waited = True
                self._count("fill_waits")
            if time.monotonic() >= deadline:
                return self._load_and_fill(keys, None, load)  # the winner is slow or dead
            gevent.sleep(FILL_POLL_SECONDS)
        return self._load_and_fill(keys, token, load)

    def _load_and_fill(self, keys: list[str], token: str | None, load: Callable[[], bytes]) -> bytes:
        """Load, store under keys[0] and free the fill lock keys[1] if `token` holds it (also when load fails)."""
        try:
            value = load()
        except BaseException:
            if token is not None:
                self._fill_script(keys, [token])
            raise
        self._fill_script(keys, [token or "", self.backend.serializer.dumps(value), self.ttl])
        return value

    def _fill_script(self, keys: list[str], args: list[Any]) -> None:
        if not self.available():
            return
        try:
            assert self._fill is not None
            self._fill(keys=keys, args=args)
        except Exception as exc:
            self._failed("write", exc)  # a busy pool: the value is in hand, the lock expires by itself


def cached(
    key: tuple[str, list[str]],
    load: Callable[[], bytes],
    viewer: int | None,
    facts: Iterable[Fact] = (),
    lead: int = 0,
) -> bytes:
    """The shared entry of `key` (filled by `load` on a miss) as `viewer` sees it, without its header.

    `lead` lines that the domain keeps in front of the header (e.g. a count) are returned as they are.
    """
    facts = tuple(facts)
    entry, flags = get_cache().fetch_viewer(key, load, viewer, facts, lead)
    front, rest = _split_lead(entry, lead)
    header, body = header_of(rest)
    if viewer is not None and any(header.values()):
        known = {name: held for name, held in flags.items() if held is not None}
        body = flag(body, header, known)
        unknown = {name: pairs for name, pairs in header.items() if pairs and flags.get(name) is None}
        if unknown:
            body = by_statement(body, unknown, viewer, facts)
    return front + body


def _split_lead(entry: bytes, lead: int) -> tuple[bytes, bytes]:
    at = 0
    for _ in range(lead):
        at = entry.index(b"\n", at) + 1
    return entry[:at], entry[at:]


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
