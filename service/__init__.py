"""The Conduit API service: `create_app()` builds the Flask app.

The factory is the table of contents: settings, extensions, blueprints, error
handlers, CLI. Nothing runs at import time; gunicorn imports this module in
each worker after forking.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

import config

API_PREFIX = "/api"


def create_app(overrides: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None) -> Flask:
    """Build the app from `env` (default: os.environ) plus explicit `overrides`."""
    env = os.environ if env is None else env
    app = Flask(__name__, static_folder=None)
    app.config.update(config.load(env, overrides))
    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_rate_limits(app, env)
    register_error_handlers(app)
    register_commands(app)
    install_fast_path(app)
    return app


def configure_logging(app: Flask) -> None:
    """Log level, request ids, the JSON access line and request metrics (first: see logs.init_app)."""
    from service.runtime import logs, metrics

    logging.getLogger("service").setLevel(app.config["LOG_LEVEL"])
    logs.init_app(app)
    metrics.init_app(app)


def register_extensions(app: Flask) -> None:
    from service.api import headers, httpcache
    from service.caching import cache
    from service.runtime import metrics
    from service.security import auth
    from service.storage import db, green

    database = db.init_app(app)
    metrics.instrument_database(database)  # pool gauges; the storage layer knows nothing of metrics
    if database.dialect == "postgresql" and _gevent_active():
        green.install(app.config["DB_CONNECT_TIMEOUT"])
    auth.init_app(app)
    cache.init_app(app)
    httpcache.init_app(app)
    headers.init_app(app)


def register_blueprints(app: Flask) -> None:
    """The API's blueprints under /api, and the health checks at the root."""
    from service.health.routes import bp as health

    register_api(app)
    app.register_blueprint(health)


def register_api(app: Flask) -> None:
    """Every domain's blueprint, in one visible place: a new domain adds its line here."""
    from service.api import openapi
    from service.articles.routes import SlugConverter
    from service.articles.routes import bp as articles
    from service.comments.routes import bp as comments
    from service.profiles.routes import bp as profiles
    from service.tags.routes import bp as tags
    from service.users.routes import bp as users

    app.url_map.converters["slug"] = SlugConverter  # before the rules that use it
    for blueprint in (users, profiles, articles, comments, tags, openapi.bp):
        app.register_blueprint(blueprint, url_prefix=API_PREFIX)


def register_rate_limits(app: Flask, env: Mapping[str, str]) -> None:
    """Bind the limits the views declare, with their settings (after the blueprints, whose views it wraps)."""
    from service.security import ratelimit

    ratelimit.init_app(app, env)


def settings(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Every setting an app built from `env` runs with: config's, and those its domains declare
    (rate limits). For tools and tests: nothing is connected or started."""
    from service.security import ratelimit

    loaded = config.load(env, overrides)
    app = Flask(__name__, static_folder=None)
    app.config.update(loaded)
    register_api(app)
    return {**loaded, **ratelimit.declared_settings(app, env)}


def register_error_handlers(app: Flask) -> None:
    from service.api.errors import register_error_handlers as register

    register(app)


def register_commands(app: Flask) -> None:
    from service.cli import db_cli

    app.cli.add_command(db_cli)


def install_fast_path(app: Flask) -> None:
    """Answer anonymous cache hits ahead of Flask's dispatch (last: it binds the finished URL map)."""
    from service.caching import fastpath

    shared = app.extensions["shared_cache"]
    if shared.enabled:
        fastpath.install(app, shared)


def _gevent_active() -> bool:
    """True inside a gevent worker (sockets monkey-patched), where psycopg2 must yield."""
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))
