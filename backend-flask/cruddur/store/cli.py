"""`flask --app app db upgrade` and `flask --app app db seed`: the database's schema and sample data."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from cruddur.timeutil import utc_now

db_cli = AppGroup("db", help="The database: apply migrations, load the sample data.")


@db_cli.command("upgrade")
def upgrade() -> None:
    """Apply the pending migrations (safe to run from several instances at once)."""
    store = current_app.extensions["cruddur"].deps.store
    try:
        applied = store.upgrade()
    except Exception as error:
        raise click.ClickException(f"the migrations could not be applied: {error}") from error
    click.echo(f"applied {', '.join(applied)}" if applied else "the schema is up to date")


@db_cli.command("seed")
def seed() -> None:
    """Load the sample users, activities and conversations (once per database)."""
    store = current_app.extensions["cruddur"].deps.store
    try:
        loaded = store.seed(utc_now())
    except Exception as error:
        raise click.ClickException(f"the sample data could not be loaded: {error}") from error
    click.echo("loaded the sample data" if loaded else "the sample data is already there")
