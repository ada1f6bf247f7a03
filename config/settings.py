"""Settings classes, one per environment.

Nothing here reads the environment at import time: `load(env)` is called by
`service.create_app()` with `os.environ` (or a test's dict) and returns a plain
dict that becomes `app.config`. Each knob says its unit and a sane range.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

DEV_SECRET = "dev-secret-change-me-dev-secret-change-me"  # noqa: S105 - refused by ProductionConfig


class BaseConfig:
    # Database URL: sqlite:///path or postgresql://user@host:port/db. The embedded
    # default keeps a SQLite file under var/ so a first `make run` needs no server.
    DATABASE_URL = "sqlite:///var/conduit.db"
    # PostgreSQL itself, for what needs a server session of its own (migrations) when DATABASE_URL
    # points at PgBouncer in transaction pooling mode. Empty: DATABASE_URL.
    DATABASE_DIRECT_URL = ""
    # PostgreSQL streaming replicas for reads that may lag (comma-separated URLs; empty: every read on
    # DATABASE_URL). A user's reads after their own write, and cache fills after a bump, use a replica
    # only once it replayed that write (service/storage/replicas.py).
    DATABASE_REPLICA_URLS = ""
    # Seconds of replay lag past which a replica is skipped (its reads go to the primary).
    DATABASE_REPLICA_MAX_LAG = 10.0
    # Connections kept open per worker process (1-50). Every gevent greenlet that
    # talks to the database holds one for the duration of its transaction, so
    # pool size + overflow caps a worker's concurrent DB work. Budget:
    # replicas x workers x (size + overflow) < PostgreSQL max_connections - 3,
    # or PgBouncer's max_client_conn when DATABASE_URL points at PgBouncer.
    DB_POOL_SIZE = 10
    # Extra connections opened under bursts and closed when idle (0-50).
    DB_MAX_OVERFLOW = 5
    # On PostgreSQL, writes use a second pool of this size (1-50) plus
    # DB_MAX_OVERFLOW; reads use DB_POOL_SIZE. Per worker at most
    # DB_POOL_SIZE + DB_WRITE_POOL_SIZE + 2 x DB_MAX_OVERFLOW connections.
    DB_WRITE_POOL_SIZE = 5
    # Seconds a pooled connection may sit idle before it is pinged on checkout
    # (0 = ping every checkout, one extra round trip per request).
    DB_PING_AFTER = 1.0
    # Seconds a request waits for a free connection before it gets 503 (0.1-5).
    # Far below gunicorn's timeout so exhaustion is a fast, clear answer.
    DB_POOL_TIMEOUT = 2.0
    # Seconds to establish a new PostgreSQL connection (0.5-10). Enforced by our
    # own gevent wait callback, because libpq ignores connect_timeout in async mode.
    DB_CONNECT_TIMEOUT = 2.0
    # Server-side bound on one SQL statement, milliseconds (100-30000).
    DB_STATEMENT_TIMEOUT_MS = 5000
    # Seconds after which pooled connections are replaced (300-3600).
    DB_POOL_RECYCLE = 1800

    # HS256 signing key for tokens; at least 32 bytes in production.
    SECRET_KEY = DEV_SECRET
    # Token lifetime, seconds (300-2592000). The default is 7 days.
    JWT_TTL_SECONDS = 7 * 24 * 3600
    # Seconds a worker trusts a token it has verified before it reads the account again (0-300;
    # 0 = every request, one primary-key lookup). A password change revokes every token issued
    # before it: at once in the worker that made the change, within this time in all others.
    TOKEN_RECHECK_SECONDS = 10.0
    # Argon2id parameters: OWASP minimum (m=19 MiB, t=2, p=1) by default.
    PASSWORD_TIME_COST = 2
    PASSWORD_MEMORY_KIB = 19 * 1024
    # OS threads per worker that run password hashing off the gevent hub (1-8).
    # Each concurrent hash holds PASSWORD_MEMORY_KIB of memory.
    PASSWORD_HASH_THREADS = 2

    # Largest accepted request body, bytes (larger gets 413).
    MAX_CONTENT_LENGTH = 1024 * 1024
    # Browser origins allowed to call the API cross-origin (CORS), comma-separated
    # `scheme://host[:port]`, or `*` for any. Empty: no CORS headers (same-origin only).
    # Credentials are never allowed (tokens travel in the Authorization header).
    CORS_ORIGINS = ""
    # Seconds an Idempotency-Key is remembered (3600-604800): a retry within it replays the first
    # answer; after it the key is free again. Cover the longest client or proxy retry window.
    IDEMPOTENCY_TTL_SECONDS = 24 * 3600
    # flask-caching: in-process by default, Redis when REDIS_URL is set,
    # NullCache to switch caching off.
    REDIS_URL: str | None = None
    CACHE_TYPE = "SimpleCache"
    # Seconds a cached response lives (5-600). Correctness after writes comes
    # from generation counters; this TTL only bounds staleness when an
    # invalidation could not reach Redis.
    CACHE_DEFAULT_TIMEOUT = 60
    # Entries the in-process cache (SimpleCache) holds per worker before it
    # evicts the ones closest to expiry (100-100000), and as many generation
    # counters, kept apart (service/caching/cache.py). Redis uses its maxmemory.
    CACHE_THRESHOLD = 500
    # Seconds a generation counter lives in Redis after its last bump (longer
    # than CACHE_DEFAULT_TIMEOUT, refused otherwise; see _check_cache).
    CACHE_GENERATION_TTL = 7 * 24 * 3600
    # Seconds one Redis call may take before it counts as failed (0.02-1).
    CACHE_SOCKET_TIMEOUT = 0.1
    # Redis connections per worker process (8-512), and seconds a read waits
    # for a free one before it is shed with a 503 (0.05-2): a busy pool never
    # sends a read to the database (docs/caching.md, "Load on the cache").
    CACHE_MAX_CONNECTIONS = 64
    CACHE_POOL_WAIT = 0.5
    # Seconds a miss waits for another worker or replica that is loading the
    # same entry before it loads it itself; also the life of that fill lock (0.05-5).
    CACHE_FILL_WAIT = 1.0
    # Seconds a worker bypasses Redis after a failure (1-60): a hung Redis costs
    # one timeout per period per worker, not one per request.
    CACHE_BREAKER_SECONDS = 5.0
    # Namespace of every key; bump the version on incompatible deploys, and use
    # one prefix per database when several deployments share a Redis.
    CACHE_KEY_PREFIX = "conduit:v1:"

    # Rate limits (service/security/ratelimit.py), each a limits string: "N/second|minute|hour|day", several
    # joined by ";" (all must hold); "off" = no limit. Counters live in Redis when REDIS_URL is set
    # (shared by every worker and replica), else in each worker's memory. A rejection is a 429 with
    # Retry-After. Off only by config: RATELIMIT_ENABLED=0 (the Testing profile and the benchmark).
    RATELIMIT_ENABLED = True
    # Each limit (RATELIMIT_LOGIN_ACCOUNT, RATELIMIT_ARTICLES_USER ...) is declared by its domain next
    # to its routes, with its production and development defaults (service/<domain>/routes.py); it
    # is read from the environment like the settings here (see `Declared` below).
    # fixed-window (one Redis round trip per check, bursts up to 2x at a window edge),
    # sliding-window-counter (smoother, two counters) or moving-window (exact, one entry per hit).
    RATELIMIT_STRATEGY = "fixed-window"
    # Client addresses or networks never limited, comma-separated (e.g. a monitoring probe or a load
    # generator). Matched against the address derived below, which clients cannot forge.
    RATELIMIT_EXEMPT_ADDRESSES = ""
    # Seconds one Redis call of the limiter may take (0.02-1); past it the worker limits from its
    # own memory and retries Redis after 1, 2, 4 ... 32 s.
    RATELIMIT_REDIS_TIMEOUT = 0.1
    # Proxies whose X-Forwarded-For is believed (comma-separated addresses/networks, "*" = any
    # peer). The same variable tells gunicorn whom to trust for X-Forwarded-Proto. The client
    # address is the rightmost X-Forwarded-For entry not written by one of these, so list exactly
    # the load balancers (HAProxy with `option forwardfor`); a client's own header is never used.
    FORWARDED_ALLOW_IPS = "127.0.0.1,::1"

    # Logging level for the service's own loggers.
    LOG_LEVEL = "INFO"
    # Client networks (comma-separated CIDRs) that may read /metrics; others get 404. The client
    # is the address derived through FORWARDED_ALLOW_IPS; a forwarded request from an untrusted
    # peer is refused. Default: loopback and private ranges (a scraper next to the replica).
    METRICS_ALLOW = "127.0.0.0/8,::1/128,10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,fc00::/7"
    # Seconds /readyz may spend on its database query before it reports a timeout (0.2-5).
    READINESS_TIMEOUT = 1.0
    TESTING = False
    REQUIRE_SECRET = False


class DevelopmentConfig(BaseConfig):
    """The embedded default: SQLite file + in-process cache, dev secret allowed.

    Declared settings take their `development` default here (generous rate limits: a person
    trying the API by hand must not meet 429 after a few minutes)."""


class TestingConfig(BaseConfig):
    TESTING = True
    # Fast hashing keeps the suite quick; the algorithm and code path stay the same.
    PASSWORD_TIME_COST = 1
    PASSWORD_MEMORY_KIB = 8 * 1024
    # Tests of the limits switch them on with tiny values; every other test registers freely.
    RATELIMIT_ENABLED = False


class ProductionConfig(BaseConfig):
    REQUIRE_SECRET = True


PROFILES: dict[str, type[BaseConfig]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def flag(value: str) -> bool:
    """An on/off environment value: 1/true/yes/on or 0/false/no/off."""
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


# Environment variables that override settings, with the type to parse them as.
ENV_OVERRIDES: dict[str, Callable[[str], Any]] = {
    "DATABASE_URL": str,
    "DATABASE_DIRECT_URL": str,
    "DATABASE_REPLICA_URLS": str,
    "DATABASE_REPLICA_MAX_LAG": float,
    "DB_POOL_SIZE": int,
    "DB_MAX_OVERFLOW": int,
    "DB_WRITE_POOL_SIZE": int,
    "DB_PING_AFTER": float,
    "DB_POOL_TIMEOUT": float,
    "DB_CONNECT_TIMEOUT": float,
    "DB_STATEMENT_TIMEOUT_MS": int,
    "SECRET_KEY": str,
    "JWT_TTL_SECONDS": int,
    "TOKEN_RECHECK_SECONDS": float,
    "PASSWORD_HASH_THREADS": int,
    "MAX_CONTENT_LENGTH": int,
    "CORS_ORIGINS": str,
    "IDEMPOTENCY_TTL_SECONDS": int,
    "REDIS_URL": str,
    "CACHE_TYPE": str,
    "CACHE_DEFAULT_TIMEOUT": int,
    "CACHE_GENERATION_TTL": int,
    "CACHE_THRESHOLD": int,
    "CACHE_SOCKET_TIMEOUT": float,
    "CACHE_BREAKER_SECONDS": float,
    "CACHE_MAX_CONNECTIONS": int,
    "CACHE_POOL_WAIT": float,
    "CACHE_FILL_WAIT": float,
    "CACHE_KEY_PREFIX": str,
    "LOG_LEVEL": str,
    "METRICS_ALLOW": str,
    "READINESS_TIMEOUT": float,
    "RATELIMIT_ENABLED": flag,
    "RATELIMIT_STRATEGY": str,
    "RATELIMIT_EXEMPT_ADDRESSES": str,
    "RATELIMIT_REDIS_TIMEOUT": float,
    "FORWARDED_ALLOW_IPS": str,
}


class ConfigError(RuntimeError):
    """The configuration cannot run safely; the message says what to set."""


@dataclass(frozen=True)
class Declared:
    """A setting declared by the code that uses it (a domain's rate limit), not by a class above.

    `production` is its default in every profile but development, which takes `development` when
    given. Like the settings above, the environment variable of the same name overrides it
    (parsed by `parse`), and an explicit override wins over both.
    """

    name: str
    production: Any
    development: Any = None
    parse: Callable[[str], Any] = str

    def default(self, profile: str) -> Any:
        return self.development if profile == "development" and self.development is not None else self.production


def resolve(declared: Iterable[Declared], settings: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The values of `declared` settings not in `settings` already: from `env`, else the profile's default.

    ConfigError for a value that does not parse, or one name declared twice with different defaults."""
    seen: dict[str, Declared] = {}
    values: dict[str, Any] = {}
    for item in declared:
        if seen.setdefault(item.name, item) != item:
            raise ConfigError(f"{item.name} is declared twice, with different defaults")
        if item.name in settings:
            continue
        if env.get(item.name):
            try:
                values[item.name] = item.parse(env[item.name])
            except ValueError as exc:
                raise ConfigError(f"{item.name}={env[item.name]!r} is not a valid {item.parse.__name__}") from exc
        else:
            values[item.name] = item.default(settings["APP_ENV"])
    return values


def load(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Build the settings dict for `APP_ENV` (development by default) from `env`."""
    profile = env.get("APP_ENV", "development")
    if profile not in PROFILES:
        raise ConfigError(f"APP_ENV={profile!r} is not one of {sorted(PROFILES)}")
    cls = PROFILES[profile]
    settings = {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
    settings["APP_ENV"] = profile
    for name, kind in ENV_OVERRIDES.items():
        if env.get(name):
            try:
                settings[name] = kind(env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}={env[name]!r} is not a valid {kind.__name__}") from exc
    settings.update(overrides or {})
    settings["DATABASE_DIRECT_URL"] = settings["DATABASE_DIRECT_URL"] or settings["DATABASE_URL"]
    for name in ("DATABASE_URL", "DATABASE_DIRECT_URL"):
        if settings[name].startswith("postgres://"):
            settings[name] = "postgresql://" + settings[name][len("postgres://") :]
    settings["DATABASE_REPLICA_URLS"] = ",".join(_replica_urls(settings["DATABASE_REPLICA_URLS"]))
    if settings["REDIS_URL"] and "CACHE_TYPE" not in env and "CACHE_TYPE" not in (overrides or {}):
        settings["CACHE_TYPE"] = "RedisCache"
    _check(settings)
    return settings


def _replica_urls(value: str) -> list[str]:
    """DATABASE_REPLICA_URLS as a list of postgresql:// URLs; ConfigError for anything else."""
    urls = []
    for url in (u.strip() for u in str(value or "").split(",")):
        if not url:
            continue
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if not url.startswith(("postgresql://", "postgresql+psycopg2://")):
            raise ConfigError("DATABASE_REPLICA_URLS holds comma-separated postgresql:// URLs")
        urls.append(url)
    return urls


def _check(settings: dict[str, Any]) -> None:
    secret = settings["SECRET_KEY"]
    if settings["REQUIRE_SECRET"] and (not secret or secret == DEV_SECRET or len(secret) < 32):
        raise ConfigError(
            "production needs SECRET_KEY: a random string of at least 32 characters, "
            "for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    _check_cache(settings)


def _check_cache(settings: dict[str, Any]) -> None:
    """Refuse cache settings under which a generation counter could go backwards or be lost routinely.

    The rule (service/caching/cache.py, module doc): a generation never takes a value it
    held before, so an old entry is never current again after a write. It holds
    because every value comes from a clock that only one party writes: the
    worker's own for SimpleCache (a per-process store), Redis's for RedisCache.
    Any other backend (a file or memcached store shared by several processes)
    has no such clock, so it is refused.

    Entries must expire (the TTL is the last bound on what the epoch does not
    cover). A Redis generation must outlive the entries stored at its start: one
    that expires sooner restarts (from the clock, so still safe) while its
    entries are fresh, turning expiries into misses; and a TTL of 0 or less
    makes Redis refuse every bump (`SET ... EX 0`), so no invalidation would land.
    """
    kind = settings["CACHE_TYPE"]
    if kind not in ("SimpleCache", "RedisCache", "NullCache"):
        raise ConfigError("CACHE_TYPE must be SimpleCache, RedisCache or NullCache")
    if kind == "RedisCache" and not settings["REDIS_URL"]:
        raise ConfigError("CACHE_TYPE=RedisCache needs REDIS_URL")
    ttl, gen_ttl = settings["CACHE_DEFAULT_TIMEOUT"], settings["CACHE_GENERATION_TTL"]
    if not (isinstance(ttl, int) and isinstance(gen_ttl, int) and 0 < ttl < gen_ttl):
        raise ConfigError(
            f"CACHE_GENERATION_TTL ({gen_ttl!r}) must be a whole number of seconds longer than "
            f"CACHE_DEFAULT_TIMEOUT ({ttl!r}), which must be at least 1: cached entries expire, "
            "and generation counters outlive them (default 604800, 7 days)"
        )
