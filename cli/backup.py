"""``hermes backup run|list|restore``: backups of the control DB and tenants' agent data
(``control/services/backups.py``; runbook ``runbooks/backup-restore.md``)."""

from __future__ import annotations

import click

from control.errors import HermesError
from control.settings import Settings


def _settings():
    try:
        return Settings.from_env()
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc


def _connect(settings):
    # deferred: keeps `hermes --help` light: loads peewee (~50 ms)
    from control.db import connect_database

    return connect_database(settings.database_url)


@click.group()
def backup():
    """Back up and restore the control database and tenants' agent data."""


@backup.command()
def run() -> None:
    """Back up the control DB and every running tenant now, then prune old backups.

    Prints one line per stored object; exits 1 when a tenant's backup failed.
    """
    # deferred: keeps `hermes --help` light: loads peewee, tenacity, infra (~150 ms)
    from control.services import backups

    settings = _settings()
    database = _connect(settings)
    try:
        with database.connection_context():
            report = backups.run_from_settings(settings)
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        database.close()
    for entry in filter(None, [report.control, *report.tenants]):
        click.echo(f"stored {entry.key} ({entry.bytes} bytes)")
    for key in report.pruned:
        click.echo(f"pruned {key}")
    for tenant, error in sorted(report.failures.items()):
        click.echo(f"FAILED tenant {tenant}: {error}", err=True)
    if report.failures:
        raise SystemExit(1)


@backup.command("list")
@click.option("--tenant", help="only this tenant's backups")
@click.option("--archives", is_flag=True, help="list deprovision archives instead of backups")
def list_(tenant: str | None, archives: bool) -> None:
    """List stored backups: key, size in bytes and UTC time, oldest first per series."""
    # deferred: keeps `hermes --help` light: loads peewee, tenacity, infra (~150 ms)
    from control.services import backups

    store = backups.store_from_settings(_settings())
    prefix = "archives/" if archives else backups.PREFIX + (f"tenants/{tenant}/" if tenant else "")
    entries = [e for e in backups.list_backups(store, prefix)
               if not (archives and tenant) or f"/{tenant}/" in e.key]
    for entry in entries:
        click.echo(f"{entry.key}\t{entry.bytes}\t{entry.created_at:%Y-%m-%d %H:%M:%SZ}")
    if not entries:
        click.echo("no backups", err=True)


@backup.group()
def restore():
    """Restore the control DB (into a fresh database) or a tenant's agent data."""


@restore.command("control")
@click.argument("key")
@click.option("--database-url", help="target database (default: DATABASE_URL); must be fresh")
def restore_control(key: str, database_url: str | None) -> None:
    """Restore control DB backup KEY into a fresh database (SQLite file absent, or an empty
    Postgres database), then run ``hermes db upgrade``."""
    # deferred: keeps `hermes --help` light: loads peewee, tenacity, infra (~150 ms)
    from control.services import backups

    settings = _settings()
    try:
        backups.restore_control_db(backups.store_from_settings(settings), key,
                                   database_url or settings.database_url)
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"restored {key}")


@restore.command("tenant")
@click.argument("tenant")
@click.argument("key", required=False)
@click.option("--force", is_flag=True, help="replace the stores of a non-empty data dir")
def restore_tenant(tenant: str, key: str | None, force: bool) -> None:
    """Restore TENANT's agent data from KEY (default: its newest backup); KEY may also be a
    deprovision archive (``archives/...``).  Locally the agent must be stopped; on a VM the
    agent's units are stopped and started around the restore."""
    # deferred: keeps `hermes --help` light: loads peewee, tenacity, infra (~150 ms)
    from control.services import backups

    settings = _settings()
    store = backups.store_from_settings(settings)
    key = key or backups.latest_tenant_backup(store, tenant)
    if key is None:
        raise click.ClickException(f"no backup of tenant {tenant}")
    address = None
    if settings.provisioner == "hetzner":
        # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
        from control.models import Machine

        database = _connect(settings)
        with database.connection_context():
            machine = Machine.get_or_none(Machine.tenant == int(tenant))
        address = machine.address if machine else None
    try:
        report = backups.restore_tenant(store, tenant, key,
                                        backups.target_from_settings(settings, tenant, address),
                                        force=force)
    except HermesError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"restored {key}: {report}")
