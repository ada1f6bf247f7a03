"""Rate limits: Flask-Limiter over Redis, shared by every worker and replica; per process without Redis.

A domain declares its rules next to its routes (`Rule`: the setting's name, its production and
development defaults, the bucket) and a view carries them with `@limited(RULE, ...)`; `init_app`
gives each rule of a registered view its setting (environment or default, see config.Declared)
and binds them to a Limiter of this app's own (Flask-Limiter keeps its state per instance, and
tests build many apps in one process). Each rule's value is a setting holding a limits string
("10/minute;100/hour"; "off" = no limit).
Over a limit: 429 in the API's error shape with `Retry-After` seconds, counted per rule in metrics.

Redis trouble never fails or stalls a request: every Redis call is bounded by
RATELIMIT_REDIS_TIMEOUT, and after a failure the worker limits from its own memory, checking Redis
again after 1, 2, 4 ... 32 s (Flask-Limiter's in-memory fallback). The client address is the one
the nearest trusted proxy saw (FORWARDED_ALLOW_IPS), so a client cannot pick its own bucket.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits import parse_many

from config import ConfigError, Declared, flag, resolve
from service.api.errors import APIError, TooManyRequests, api_error_response
from service.runtime import logs, metrics
from service.storage import redis_pool

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
STRATEGIES = ("fixed-window", "moving-window", "sliding-window-counter")


@dataclass(frozen=True)
class Rule:
    setting: str  # the config key that holds the limits string (RATELIMIT_<SCOPE>_<WHOSE BUCKET>)
    scope: str  # the bucket name, shared by every view carrying the rule; also the metric label
    key: Callable[[], str | None]  # whose bucket; None = the rule does not apply to this request
    production: str  # the setting's default in production (and testing, where limits are off)
    development: str | None = None  # its default under `make run`; None = as in production
    # A flag setting: when off, only requests answered 2xx count (Flask-Limiter's deduct_when).
    # None: every attempt counts, whatever the answer (what guards guessing must do).
    count_failed: Declared | None = None

    def settings(self) -> list[Declared]:
        """The settings this rule reads, with their defaults."""
        limit = Declared(self.setting, self.production, self.development)
        return [limit] if self.count_failed is None else [limit, self.count_failed]


def counts_failed(setting: str, production: bool, development: bool | None = None) -> Declared:
    """A rule's `count_failed` flag setting, with its defaults."""
    return Declared(setting, production, development, parse=flag)


def client_address() -> str:
    """The client's bucket: its address as the nearest trusted proxy saw it; an IPv6 client is its /64.

    The address comes from service.runtime.logs (the access line shows the same one): X-Forwarded-For is
    read right to left only while the hop that wrote it is trusted (FORWARDED_ALLOW_IPS), so a
    client's own entries in it are never believed. One IPv6 host usually holds a whole /64."""
    address = _client_ip()
    if address is None:
        return str(request.environ.get("REMOTE_ADDR") or "unknown")
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _client_ip() -> IPAddress | None:
    if "_ratelimit_client" not in g:
        g._ratelimit_client = _parse(logs.client_address(request.environ, current_app.extensions["trusted_proxies"]))
    return g._ratelimit_client  # type: ignore[no-any-return]


def _parse(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def authenticated_user() -> str | None:
    """The bucket of a rule on writes: the id of the token's user; None when anonymous or the token is
    invalid (auth answers 401)."""
    from service.security import auth

    try:
        token = auth.token_from_header()
        return None if token is None else str(auth.decode_token(token))
    except APIError:
        return None


def limited(*rules: Rule) -> Callable[[F], F]:
    """Declare a view's rate limits; `init_app` applies them (and the OpenAPI document shows 429)."""

    def mark(fn: F) -> F:
        setattr(fn, "__ratelimits__", (*declared(fn), *rules))  # noqa: B010 - a plain attribute on a function
        return fn

    return mark


def declared(view: Callable[..., Any]) -> tuple[Rule, ...]:
    return tuple(getattr(view, "__ratelimits__", ()))


@dataclass(frozen=True)
class State:
    exempt: logs.AddressList
    limiter: Limiter | None


def rules_of(app: Flask) -> list[Rule]:
    """The rules `app`'s views declare, each once; ConfigError when two differ on one scope."""
    rules: dict[str, Rule] = {}
    for view in app.view_functions.values():
        for rule in declared(view):
            if rules.setdefault(rule.scope, rule) != rule:
                raise ConfigError(f"two rate limit rules share the scope {rule.scope!r}")
    return list(rules.values())


def declared_settings(app: Flask, env: Mapping[str, str]) -> dict[str, Any]:
    """The settings of the rules `app`'s views declare that are not set already: from `env`, else defaults."""
    return resolve((s for rule in rules_of(app) for s in rule.settings()), app.config, env)


def init_app(app: Flask, env: Mapping[str, str]) -> None:
    """Bind the declared limits of `app`'s views (call after the blueprints are registered).

    Their settings come from `app.config` when set there (an explicit override), else `env`,
    else the rule's default for the profile."""
    app.config.update(declared_settings(app, env))
    cfg = app.config
    _validate(cfg, rules_of(app))
    limiter = _limiter(app) if cfg["RATELIMIT_ENABLED"] else None
    app.extensions["ratelimit"] = State(
        logs.AddressList(cfg["RATELIMIT_EXEMPT_ADDRESSES"], "RATELIMIT_EXEMPT_ADDRESSES"), limiter
    )
    app.register_error_handler(RateLimitExceeded, _exceeded)
    if limiter is None:
        return
    for endpoint, view in list(app.view_functions.items()):
        wrapped: Any = view
        for rule in declared(view):
            wrapped = limiter.shared_limit(
                partial(_limit_value, rule),
                scope=rule.scope,
                key_func=partial(_key, rule),
                exempt_when=partial(_not_applicable, rule),
                on_breach=partial(_breached, rule),
                deduct_when=None if rule.count_failed is None or cfg[rule.count_failed.name] else _succeeded,
            )(wrapped)
        app.view_functions[endpoint] = wrapped


def _limiter(app: Flask) -> Limiter:
    cfg = app.config
    options: dict[str, Any] = {}
    if cfg["REDIS_URL"]:
        # redis-py 8 defaults wait 5 s per try with up to 10 retries (a minute on a hung Redis):
        # here one try, short timeouts and a bounded pool with a short wait for a free connection.
        timeout = float(cfg["RATELIMIT_REDIS_TIMEOUT"])
        pool = redis_pool.fail_fast_pool(cfg["REDIS_URL"], int(cfg["CACHE_MAX_CONNECTIONS"]), timeout, timeout)
        options = {"connection_pool": pool, "key_prefix": f"{cfg['CACHE_KEY_PREFIX']}ratelimit"}
    limiter = Limiter(
        key_func=client_address,
        storage_uri=cfg["REDIS_URL"] or "memory://",
        storage_options=options,
        strategy=cfg["RATELIMIT_STRATEGY"],
        in_memory_fallback_enabled=True,
        # Errors the fallback does not cover (none known) let the request through, logged.
        swallow_errors=True,
        headers_enabled=False,  # X-RateLimit-* would cost a Redis round trip on every limited request
    )
    limiter.init_app(app)
    limiter.request_filter(_exempt)
    return limiter


def _validate(cfg: Any, rules: list[Rule]) -> None:
    for rule in rules:
        value = cfg[rule.setting]
        try:
            if _limits_string(value):
                parse_many(_limits_string(value))
        except ValueError as exc:
            raise ConfigError(f"{rule.setting}={value!r} is not a limits string like '10/minute;100/hour'") from exc
    if cfg["RATELIMIT_STRATEGY"] not in STRATEGIES:
        raise ConfigError(f"RATELIMIT_STRATEGY must be one of {', '.join(STRATEGIES)}")


def _limits_string(value: str) -> str:
    return "" if value.strip().lower() in ("", "off", "none") else value


def _limit_value(rule: Rule) -> str:
    return _limits_string(str(current_app.config[rule.setting]))


def _key(rule: Rule) -> str:
    keys: dict[str, str | None] = g.setdefault("_ratelimit_keys", {})
    if rule.scope not in keys:
        try:
            keys[rule.scope] = rule.key()
        except Exception:
            # E.g. the database is down while a token is checked. Flask-Limiter would take any error
            # here for a Redis failure and drop to per-process counters; the view answers instead.
            log.warning("rate limit key for %s failed; limit skipped for this request", rule.scope, exc_info=True)
            keys[rule.scope] = None
    return keys[rule.scope] or ""


def _succeeded(response: Response) -> bool:
    """Whether a request counts against a rule that counts successes only: it was answered 2xx."""
    return 200 <= response.status_code < 300


def _not_applicable(rule: Rule) -> bool:
    return not _key(rule)


def _exempt() -> bool:
    exempt: logs.AddressList = current_app.extensions["ratelimit"].exempt
    if not exempt.networks and not exempt.any:
        return False
    address = _client_ip()
    return address is not None and str(address) in exempt


def _breached(rule: Rule, limit: RequestLimit) -> Response:
    try:
        reset_at = float(limit.window[0])
    except Exception:  # the store just failed: the window length is a safe answer
        reset_at = time.time() + limit.limit.get_expiry()
    metrics.record_rate_limited(rule.scope)  # and the access line has the 429
    return api_error_response(TooManyRequests(retry_after=math.ceil(reset_at - time.time())))


def _exceeded(err: RateLimitExceeded) -> Any:
    if err.response is not None:
        return err.response
    # on_breach failed (it logs why): answer from the limit itself.
    return api_error_response(TooManyRequests(retry_after=err.limit.limit.get_expiry()))
