"""Provisioning: one machine per tenant, driven through the ``Provisioner`` interface.

States (issue #2): ``requested`` → ``provisioning`` → ``ready`` | ``failed``, each with its
timestamp.  ``request_machine`` is idempotent, so a replayed Stripe event never makes a
second machine; the slow work runs in a Huey task that calls ``run_provisioning``.

Bus access (issue #4, tenant isolation): with a Redis bus, each tenant's agent gets its own
Redis ACL user limited to that tenant's streams (``control.services.bus_acl``).  Provisioning
grants (or rotates) it and hands the agent only that user's URL as ``HERMES_BUS_URL``; the
control plane keeps the admin URL.  Deprovisioning deletes the user.  With the SQLite bus the
agent gets the bus URL unchanged.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from contextlib import contextmanager

from peewee import fn

from control.db import write_transaction
from control.errors import NotFound, ProvisioningError
from control.models import Machine, Subscription, Tenant, utcnow
from control.providers.base import MachineSpec, Provisioner
from control.services import bus_acl, linking
from control.services.attention import raise_attention
from wire.errors import WireError

log = logging.getLogger(__name__)


def request_machine(tenant: Tenant, plan: str, enqueue: Callable[[int], object],
                    enqueue_resize: Callable[[int, str], object] | None = None) -> Machine:
    """Record that ``tenant`` needs a machine on ``plan`` and enqueue provisioning once.

    Args:
        tenant: the paying tenant.
        plan: ``light`` or ``heavy``.
        enqueue: called with the tenant id to schedule ``run_provisioning`` (a Huey task).
        enqueue_resize: called with ``(tenant id, plan)`` when the tenant already has a machine
            on another plan (a Stripe plan change), to schedule ``run_resize``.

    Returns:
        The tenant's machine row (new, or the existing one untouched unless it had failed or
        been deprovisioned, in which case it is requested again).
    """
    with write_transaction():
        machine, created = Machine.get_or_create(tenant=tenant, defaults={"plan": plan})
        again = not created and machine.state in ("failed", "deprovisioned")
        if again:
            machine.state, machine.plan, machine.requested_at = "requested", plan, utcnow()
            machine.updated_at = utcnow()
            machine.save()
    if created or again:
        enqueue(tenant.id)
    elif machine.state == "ready" and machine.plan != plan and enqueue_resize is not None:
        enqueue_resize(tenant.id, plan)
    return machine


def run_provisioning(tenant_id: int, provisioner: Provisioner, agent_env: dict[str, str],
                     link_ttl: int) -> Machine:
    """Bring up the tenant's machine and, once ready, issue its first link token.

    Args:
        tenant_id: the tenant's id.
        provisioner: where machines come from.
        agent_env: environment for the agent (bus URL, LLM settings); the tenant id and a fresh
            agent token are added here, and a Redis bus URL (the admin's) is replaced by the
            tenant's own ACL user's URL (``tenant_bus_url``).
        link_ttl: link token lifetime in seconds.

    Returns:
        The machine row in its final state (``ready`` or ``failed``).

    Raises:
        NotFound: the tenant has no machine request.
    """
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine request")
    if machine.state == "ready":
        return machine
    machine.state, machine.provisioning_at, machine.attempts = "provisioning", utcnow(), machine.attempts + 1
    machine.updated_at = utcnow()
    machine.save()
    env = {**agent_env, "HERMES_TENANT": str(tenant_id),
           "HERMES_AGENT_TOKEN": secrets.token_urlsafe(32)}
    if env.get("HERMES_BUS_URL"):
        try:
            env["HERMES_BUS_URL"] = tenant_bus_url(env["HERMES_BUS_URL"], str(tenant_id))
        except WireError as exc:
            return _mark_failed(machine, f"could not grant the agent bus access: {exc}")
    try:
        status = provisioner.provision(MachineSpec(tenant=str(tenant_id), plan=machine.plan, env=env))
    except ProvisioningError as exc:
        return _mark_failed(machine, str(exc))
    if status.state != "running":
        return _mark_failed(machine, f"machine is {status.state}: {status.detail}")
    machine.state, machine.ready_at, machine.address = "ready", utcnow(), status.address
    machine.detail, machine.updated_at = status.detail, utcnow()
    machine.save()
    linking.current_token(machine.tenant, link_ttl)
    log.info("machine for tenant %s ready at %s", tenant_id, status.address)
    return machine


def _mark_failed(machine: Machine, detail: str) -> Machine:
    machine.state, machine.failed_at, machine.detail = "failed", utcnow(), detail
    machine.updated_at = utcnow()
    machine.save()
    raise_attention("provisioning_failed", str(machine.tenant_id), detail)
    return machine


def release_machine(tenant: Tenant, enqueue: Callable[[int], object]) -> None:
    """Schedule deprovisioning (with archive) of a canceled tenant's machine, once."""
    machine = Machine.get_or_none(Machine.tenant == tenant)
    if machine is None or machine.state in ("deprovisioning", "deprovisioned"):
        return
    if tenant.status == "canceled":
        machine.state, machine.updated_at = "deprovisioning", utcnow()
        machine.save()
        enqueue(tenant.id)


def run_deprovisioning(tenant_id: int, provisioner: Provisioner, bus_url: str | None = None) -> Machine:
    """Archive and delete the tenant's machine, then revoke its bus access; state ``deprovisioned``.

    Args:
        tenant_id: the tenant's id.
        provisioner: where machines come from.
        bus_url: the control plane's bus URL; for a Redis bus the tenant's ACL user is deleted
            (``revoke_bus_access``).  None or a SQLite URL: nothing to revoke.

    Raises:
        NotFound: the tenant has no machine.
        ProvisioningError: archive or deletion failed (the machine is marked failed and an
            attention item raised; the Huey task retries).
        WireError: Redis could not delete the ACL user (attention item raised; the task retries,
            and deprovisioning again is harmless).
    """
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine")
    try:
        provisioner.deprovision(str(tenant_id), archive=True)
    except ProvisioningError as exc:
        raise_attention("deprovisioning_failed", str(tenant_id), str(exc))
        raise
    if bus_url:
        try:
            revoke_bus_access(bus_url, str(tenant_id))
        except WireError as exc:
            raise_attention("bus_revoke_failed", str(tenant_id), str(exc))
            raise
    machine.state, machine.address, machine.updated_at = "deprovisioned", None, utcnow()
    machine.save()
    return machine


def run_resize(tenant_id: int, plan: str, provisioner: Provisioner) -> Machine:
    """Resize the tenant's machine to ``plan`` and record what the provider did.

    The provider decides when (``HetznerProvisioner``: upgrades now, downgrades at the billing
    period end, applied later by ``apply_due_downgrades``); ``Machine.plan`` is the size the
    machine has now and ``detail`` says when a change is pending.

    Raises:
        NotFound: the tenant has no machine.
        ProvisioningError: the provider refused.
    """
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine")
    status = provisioner.resize(str(tenant_id), plan)
    machine.plan = status.plan or plan
    machine.detail, machine.updated_at = status.detail, utcnow()
    machine.save()
    return machine


def apply_due_downgrades(provisioner: Provisioner) -> list[int]:
    """Apply scheduled downgrades whose tenant's billing period has ended.

    Only providers that defer downgrades (``scheduled_resizes``/``apply_scheduled_resize``)
    have any.  The period end is the latest ``current_period_end`` Stripe sent for the
    tenant's subscriptions.

    Returns:
        Ids of the tenants resized.
    """
    scheduled = getattr(provisioner, "scheduled_resizes", None)
    if scheduled is None:
        return []
    done = []
    for record in scheduled():
        period_end = (Subscription.select(fn.MAX(Subscription.current_period_end))
                      .where(Subscription.tenant == int(record.tenant)).scalar())
        if period_end is None or period_end > utcnow():
            continue
        status = provisioner.apply_scheduled_resize(record.tenant)
        if status is not None:
            Machine.update(plan=status.plan or record.to_plan, detail=status.detail,
                           updated_at=utcnow()).where(Machine.tenant == int(record.tenant)).execute()
            done.append(int(record.tenant))
    return done


def is_redis_url(url: str) -> bool:
    """True for a Redis bus URL (``redis://`` or ``rediss://``)."""
    return url.startswith(("redis://", "rediss://"))


def tenant_bus_url(bus_url: str, tenant: str) -> str:
    """Return the bus URL for ``tenant``'s agent, granting it bus access first.

    Args:
        bus_url: the control plane's bus URL (for Redis: the admin user's).
        tenant: the tenant id.

    Returns:
        ``bus_url`` itself for the SQLite bus; for Redis the URL of the tenant's ACL user
        ``hermes-tenant-{tenant}`` with a new random password (any earlier one stops working,
        ``bus_acl.grant``), on the admin's host, port and database.

    Raises:
        BusAuthError: the admin user may not manage ACL users.
        BusUnavailable: Redis cannot be reached.
    """
    if not is_redis_url(bus_url):
        return bus_url
    with _redis_admin(bus_url) as admin:
        return bus_acl.grant(admin, tenant)


def revoke_bus_access(bus_url: str, tenant: str) -> bool:
    """Delete ``tenant``'s Redis ACL user (its open connections are closed); idempotent.

    Returns:
        True when a user was deleted; False when there was none or the bus is not Redis.

    Raises:
        BusAuthError, BusUnavailable: as for ``tenant_bus_url``.
    """
    if not is_redis_url(bus_url):
        return False
    with _redis_admin(bus_url) as admin:
        return bus_acl.revoke(admin, tenant)


@contextmanager
def _redis_admin(bus_url: str):
    """An admin Redis connection for ACL changes, closed afterwards."""
    from wire.redis_bus import connect

    admin = connect(bus_url)
    try:
        yield admin
    finally:
        admin.close()


def ready_tenant_ids() -> list[int]:
    """Return ids of tenants whose machine is ready."""
    return [m.tenant_id for m in Machine.select(Machine.tenant).where(Machine.state == "ready")]
