"""``hermes machines``: the provider's view of machines, and the orphan sweep."""

from __future__ import annotations

import click

from cli.context import open_runtime


@click.group()
def machines():
    """Inspect machines as the provisioner sees them."""


@machines.command("list")
def list_machines():
    """One line per machine recorded in the database: tenant, state, plan, address, timestamps."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.models import Machine

    open_runtime()
    for m in Machine.select().order_by(Machine.id):
        click.echo(f"{m.tenant_id}\t{m.state}\t{m.plan}\t{m.address or '-'}\t"
                   f"requested={m.requested_at:%H:%M:%S}\t"
                   f"ready={m.ready_at.strftime('%H:%M:%S') if m.ready_at else '-'}\t{m.detail}")


@machines.command()
@click.option("--remove", is_flag=True, help="Delete orphans instead of only reporting them.")
def reconcile(remove: bool):
    """Compare cloud servers (by label) with active tenants; report or remove orphans."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.models import Machine, MachineState

    rt = open_runtime()
    sweep = getattr(rt.provisioner, "reconcile", None)
    if sweep is None:
        raise click.ClickException(f"the {rt.settings.provisioner} provisioner has no cloud to sweep")
    active = Machine.select().where(Machine.state != MachineState.DEPROVISIONED)
    known = {str(m.tenant_id) for m in active}
    # Exit status 1 while orphans or failures remain, so runbooks and cron can alert on it.
    report = sweep(known, remove=remove)
    click.echo(report.render())
    if not report.clean:
        raise SystemExit(1)


@machines.command("end-grace")
def end_grace():
    """Archive and destroy the machines of canceled tenants whose grace period has ended, and
    delete archives past HERMES_ARCHIVE_RETENTION_DAYS, now (the hourly ``end_grace`` task does
    the same).  Prints the task's report as JSON; exit status 1 when a tenant failed."""
    import json

    rt = open_runtime()
    report = rt.tasks.end_grace.call_local()
    click.echo(json.dumps(report, default=str))
    if report.get("failed"):
        raise SystemExit(1)
