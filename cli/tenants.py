"""``hermes tenants``: list tenants, show one, print a link token, resize, reprovision, deprovision,
export one's data."""

from __future__ import annotations

import json

import click

from cli.context import find_tenant, open_runtime
from control.errors import Conflict, HermesError, NotFound


@click.group()
def tenants():
    """Inspect and manage tenants."""


@tenants.command("list")
def list_tenants():
    """One line per tenant: id, email, plan, status, machine state."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.models import Machine, Tenant

    open_runtime()
    for tenant in Tenant.select().order_by(Tenant.id):
        machine = Machine.get_or_none(Machine.tenant == tenant)
        click.echo(f"{tenant.id}\t{tenant.email or '-'}\t{tenant.plan or '-'}\t{tenant.status}\t"
                   f"{machine.state if machine else 'no machine'}")


@tenants.command()
@click.argument("email")
def show(email: str):
    """Print a tenant, its machine and linked chats as JSON."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.models import ChatIdentity, Machine

    open_runtime()
    tenant = find_tenant(email)
    machine = Machine.get_or_none(Machine.tenant == tenant)
    chats = [f"{c.channel}:{c.chat_id}" for c in ChatIdentity.select().where(ChatIdentity.tenant == tenant)]
    click.echo(json.dumps({
        "id": tenant.id, "email": tenant.email, "plan": tenant.plan, "status": tenant.status,
        "stripe_customer_id": tenant.stripe_customer_id, "chats": chats,
        **{name: str(value) if value is not None else None for name, value in (
            ("past_due_since", tenant.past_due_since), ("grace_until", tenant.grace_until),
            ("archive_key", tenant.archive_key), ("archived_at", tenant.archived_at))},
        "machine": None if machine is None else {
            "state": machine.state, "plan": machine.plan, "address": machine.address,
            "detail": machine.detail, "attempts": machine.attempts,
            "requested_at": str(machine.requested_at),
            "ready_at": str(machine.ready_at) if machine.ready_at else None,
            "last_heartbeat_at": str(machine.last_heartbeat_at) if machine.last_heartbeat_at else None},
    }, indent=2))


@tenants.command("link-token")
@click.argument("email")
def link_token(email: str):
    """Print a link token and the Telegram deep link; exit 1 while the tenant is not ready."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.models import Machine, MachineState
    from control.services import linking

    rt = open_runtime()
    tenant = find_tenant(email)
    machine = Machine.get_or_none(Machine.tenant == tenant)
    if machine is None or machine.state != MachineState.READY:
        state = machine.state if machine else "no machine"
        raise click.ClickException(f"tenant {email} is not ready yet (machine: {state})")
    token = linking.current_token(tenant, rt.settings.link_token_ttl)
    click.echo(f"token: {token.token}")
    click.echo(f"link:  {linking.deep_link(rt.settings.telegram_bot_username, token.token)}")
    click.echo(f"expires: {token.expires_at:%Y-%m-%d %H:%M} UTC")


@tenants.command()
@click.argument("email")
@click.argument("plan", type=click.Choice(["light", "heavy"]))
def resize(email: str, plan: str):
    """Queue a resize of the tenant's machine (run by the serving control plane)."""
    # deferred: keeps `hermes --help` light: loads peewee (~60 ms)
    from control.services import audit

    rt = open_runtime()
    tenant = find_tenant(email)
    rt.tasks.resize_machine(tenant.id, plan)
    audit.record(audit.Actor.cli(), "machine.resize", f"tenant:{tenant.id}", None, {"plan": plan})
    click.echo(f"resize of tenant {tenant.id} to {plan} queued")


@tenants.command()
@click.argument("email")
@click.argument("action", type=click.Choice(["restart", "pause", "resume"]))
def power(email: str, action: str):
    """Restart a running agent (the provider reboots its machine), pause it (its data kept;
    messages wait on the bus) or resume a paused one; queued for the serving control plane."""
    # deferred: keeps `hermes --help` light: loads redis, peewee, prometheus_client (~200 ms)
    from control.services import audit, ops_fleet

    rt = open_runtime()
    tenant = find_tenant(email)
    change, task = {"restart": (ops_fleet.restart, rt.tasks.restart_machine),
                    "pause": (ops_fleet.pause, rt.tasks.operator_pause_machine),
                    "resume": (ops_fleet.resume, rt.tasks.resume_machine)}[action]
    try:
        before, after = change(tenant.id, task)
    except Conflict as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record(audit.Actor.cli(), f"machine.{action}", f"tenant:{tenant.id}", before, after)
    click.echo(f"{action} of tenant {tenant.id}'s agent queued")


@tenants.command()
@click.argument("email")
def reprovision(email: str):
    """Queue a fresh provisioning of a failed, deprovisioned or unhealthy tenant; idempotent.

    A ready tenant is left alone ("already ready"), and so is one being provisioned.
    """
    # deferred: keeps `hermes --help` light: loads redis, peewee (~200 ms)
    from control.services import audit, provisioning

    rt = open_runtime()
    tenant = find_tenant(email)
    try:
        outcome = provisioning.reprovision(tenant, rt.tasks.provision_machine)
    except Conflict as exc:
        raise click.ClickException(str(exc)) from exc
    audit.record(audit.Actor.cli(), "machine.reprovision", f"tenant:{tenant.id}", None,
                 {"outcome": outcome})
    messages = {"requested": f"provisioning of tenant {tenant.id} queued",
                "already_ready": f"tenant {tenant.id} is already ready; nothing to do",
                "in_progress": f"tenant {tenant.id} is already being provisioned; nothing to do"}
    click.echo(messages[outcome])


@tenants.command()
@click.argument("email")
@click.confirmation_option(prompt="Archive and delete this tenant's machine?")
def deprovision(email: str):
    """Queue archive + deletion of the tenant's machine (run by the serving control plane)."""
    # deferred: keeps `hermes --help` light: loads redis, peewee, prometheus_client (~200 ms)
    from control.services import audit, ops_fleet

    rt = open_runtime()
    tenant = find_tenant(email)
    try:
        before, after = ops_fleet.deprovision(tenant.id, rt.tasks.deprovision_machine)
    except NotFound as exc:
        raise click.ClickException(exc.message) from exc
    audit.record(audit.Actor.cli(), "machine.deprovision", f"tenant:{tenant.id}", before, after)
    click.echo(f"deprovisioning of tenant {tenant.id} queued")


@tenants.command()
@click.argument("email")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="where to write the zip (default: hermes-export-<id>-<date>.zip here)")
@click.option("--latest/--fresh", default=False,
              help="use the newest stored backup instead of taking a fresh one from the running agent")
def export(email: str, output: str | None, latest: bool):
    """Write the tenant's data (memories, skills, cron jobs, goals, history, files, settings) as
    one zip of documented JSON; archived tenants too, from their archive."""
    # deferred: keeps `hermes --help` light: loads peewee, tenacity, infra (~150 ms)
    from control.services.export import export_tenant

    rt = open_runtime()
    tenant = find_tenant(email)
    try:
        made = export_tenant(rt.settings, tenant, fresh=not latest)
    except HermesError as exc:
        raise click.ClickException(exc.message) from None
    path = output or made.filename
    with open(path, "wb") as handle:
        handle.write(made.data)
    click.echo(f"wrote {path} ({len(made.data)} bytes) from {made.source}")
