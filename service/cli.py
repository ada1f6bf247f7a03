"""`flask --app service db ...`: schema migrations."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from service.storage import migrate
from service.storage.db import get_db

db_cli = AppGroup("db", help="Database schema commands.")


@db_cli.command("upgrade")
def upgrade() -> None:
    """Apply pending migrations (safe to run from several replicas at once)."""
    applied = migrate.upgrade(get_db().engine)
    url = get_db().engine.url.render_as_string(hide_password=True)
    click.echo(f"{url}: applied {', '.join(applied)}" if applied else f"{url}: schema is up to date")


@db_cli.command("pending")
def pending() -> None:
    """List migrations not applied yet; exit status 1 when there are any."""
    versions = migrate.pending(get_db().engine)
    for version in versions:
        click.echo(version)
    if versions:
        current_app.logger.info("%d pending migrations", len(versions))
        raise SystemExit(1)
