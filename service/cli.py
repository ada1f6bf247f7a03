"""`flask --app service db ...`: schema migrations."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from service.storage import migrate
from service.storage.db import direct_engine

db_cli = AppGroup("db", help="Database schema commands.")


@db_cli.command("upgrade")
def upgrade() -> None:
    """Apply pending migrations (safe to run from several replicas at once), on DATABASE_DIRECT_URL."""
    engine = direct_engine(current_app.config)
    try:
        applied = migrate.upgrade(engine)
    finally:
        engine.dispose()
    url = engine.url.render_as_string(hide_password=True)
    click.echo(f"{url}: applied {', '.join(applied)}" if applied else f"{url}: schema is up to date")


@db_cli.command("pending")
def pending() -> None:
    """List migrations not applied yet; exit status 1 when there are any."""
    engine = direct_engine(current_app.config)
    try:
        versions = migrate.pending(engine)
    finally:
        engine.dispose()
    for version in versions:
        click.echo(version)
    if versions:
        current_app.logger.info("%d pending migrations", len(versions))
        raise SystemExit(1)
