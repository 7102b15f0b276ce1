"""``hermes db``: the control database's schema migrations (``control/migrations``)."""

from __future__ import annotations

import click

from control.errors import HermesError
from control.settings import Settings


def _connect():
    """Connect to ``DATABASE_URL`` (or the embedded SQLite file) without touching the schema."""
    # deferred: keeps `hermes --help` light: loads peewee (~50 ms)
    from control.db import connect_database

    try:
        return connect_database(Settings.from_env().database_url)
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def db():
    """Schema migrations of the control database."""


@db.command()
def upgrade() -> None:
    """Apply every pending migration; run once before the web and worker processes start.

    Safe to run concurrently and repeatedly: a second run applies nothing.  Prints one line per
    applied step, or "up to date".  Every deploy runs it, so it also records the version now
    deployed in the audit trail (mission control's overview shows the last one).
    """
    from importlib.metadata import version

    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control import migrations
    from control.db import write_transaction
    from control.services import audit

    database = _connect()
    try:
        applied = migrations.upgrade(database)
        info = migrations.status(database)
        with database.connection_context(), write_transaction():
            deployed = audit.record_deploy(version("hermes-max"), info["current"])
    except migrations.SchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.close()
    if deployed is not None:
        click.echo(f"deploy of hermes-max {version('hermes-max')} recorded")
    for step in applied:
        click.echo(f"applied {step.version:04d} {step.name}: {step.summary}")
    click.echo(f"schema version {info['current']} (up to date)")


@db.command()
def status() -> None:
    """Print the current schema version and the pending steps; exit 1 when steps are pending."""
    # deferred: keeps `hermes --help` light: loads peewee (~45 ms)
    from control import migrations

    database = _connect()
    try:
        with database.connection_context():
            info = migrations.status(database)
    except migrations.SchemaError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.close()
    baseline = f" (baseline: {info['baseline']})" if info["baseline"] else ""
    click.echo(f"schema version {info['current']} of {info['latest']}{baseline}")
    for step in info["pending"]:
        click.echo(f"pending {step.version:04d} {step.name}: {step.summary}")
    if info["pending"]:
        raise SystemExit(1)
