"""The subscription lifecycle after sign-up: past due, grace, archive, restore, deletion (issue #10).

States of a tenant (``Tenant.status`` and the lifecycle columns) and what happens to its machine:

* ``past_due`` (``mark_past_due``): a renewal payment failed and Stripe retries it; the agent
  keeps working, the user gets an e-mail and operators an attention item.  A paid invoice or
  an active subscription clears it (``reactivate``).
* ``canceled`` with ``paused_at`` / ``grace_until`` (``begin_grace``): the last subscription
  ended.  For ``HERMES_GRACE_DAYS`` the machine is paused, not destroyed (``pause_machine``:
  ``Provisioner.pause``, machine state ``paused``), every linked chat is told why, until when
  the data is kept and where to resubscribe, and messages from those chats are answered by the
  control plane instead of reaching the agent (``routing``, ``pause_notice``).
* end of grace (``end_grace``, an hourly Huey task): the machine's data is archived to object
  storage and the machine destroyed (``provisioning.run_deprovisioning``), recording
  ``Tenant.archive_key`` / ``archived_at``.  Archives older than
  ``HERMES_ARCHIVE_RETENTION_DAYS`` are deleted (``prune_archives``), and with them the
  tenant's ``archive_key``.
* resubscribing (``reactivate``, then ``provisioning.request_machine``): a paused machine is
  resumed (``resume_machine``); an archived tenant gets a new machine with its archive restored
  before the agent starts (``provisioning.run_provisioning`` passes ``archive_key`` as
  ``MachineSpec.restore_archive_key``); after retention (no ``archive_key``) a fresh machine.
* account deletion (``delete_tenant_data``): machine destroyed without archive, every archive
  and backup deleted, personal rows deleted; the tenant row stays as a tombstone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from control.db import write_transaction
from control.models import (
    Account,
    AttentionItem,
    ChatIdentity,
    Connection,
    Delivery,
    LinkToken,
    Machine,
    MachineState,
    Message,
    PasswordReset,
    Tenant,
    TenantStatus,
    Usage,
    utcnow,
)
from control.providers.archive import ObjectStore, archive_created_at, delete_archive
from control.providers.base import Provisioner
from control.services import media, provisioning
from control.services.attention import raise_attention
from control.services.composio_client import provider_from_settings
from control.services.machine_health import RESUMED_DETAIL, HealthPolicy
from control.services.notices import Notice, Send, render, tell
from wire.protocol import events_stream, messages_stream

log = logging.getLogger(__name__)

def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def mark_past_due(tenant: Tenant, billing_url: str, send: Send, retry_at: datetime | None = None,
                  now: datetime | None = None) -> bool:
    """Move an active tenant to ``past_due``: tell the user (``Notice.PAYMENT_FAILED``: chats,
    web chat, e-mail), raise ``payment_failed``.

    Call inside the transaction that recorded the failed payment (the e-mail goes to the
    outbox with it).  Nothing changes for a tenant that is not ``active`` (already past due,
    pending or canceled), so replays and later failures tell nobody twice.

    Args:
        tenant: the tenant.
        billing_url: where the user updates the payment method.
        send: the ``send_notice`` task (``notices.Send``).
        retry_at: Stripe's next attempt (the invoice's ``next_payment_attempt``), naive UTC.
        now: the time recorded as ``past_due_since`` (default now).

    Returns:
        True when the tenant became past due.
    """
    if tenant.status != TenantStatus.ACTIVE:
        return False
    now = now or utcnow()
    tenant.status, tenant.past_due_since, tenant.updated_at = TenantStatus.PAST_DUE, now, now
    tenant.save()
    retry = f"; it will be retried around {_day(retry_at)} (UTC)" if retry_at else ""
    told = tell(tenant, Notice.PAYMENT_FAILED, send, retry=retry, url=billing_url)
    raise_attention("payment_failed", str(tenant.id),
                    f"payment failed{retry}; the agent keeps working during Stripe's retries "
                    f"(e-mail {'queued to ' + told.email if told.email else 'not sent: no address'}, "
                    f"{len(told.chats)} chat(s) told)")
    return True


def reactivate(tenant: Tenant) -> None:
    """Clear the past-due and grace marks of a tenant that pays again (not saved here).

    The caller sets ``status`` to ``active`` and saves; the machine follows through
    ``provisioning.request_machine`` (a paused one is resumed, an archived one restored).
    """
    if tenant.past_due_since is not None:
        (AttentionItem.update(resolved_at=utcnow())
         .where((AttentionItem.kind == "payment_failed") & (AttentionItem.subject == str(tenant.id))
                & AttentionItem.resolved_at.is_null()).execute())
    # ``archive_key`` stays: the new machine restores it (``provisioning.run_provisioning``).
    tenant.past_due_since = tenant.paused_at = tenant.grace_until = tenant.archived_at = None


def begin_grace(tenant: Tenant, grace_days: int, now: datetime | None = None) -> bool:
    """Cancel the tenant and start its grace period (``grace_until = now + grace_days``).

    Call inside the transaction that recorded the subscription's end; the machine is paused
    afterwards (``pause_machine``, a Huey task).  Idempotent: a tenant already canceled (in
    grace, or archived) is left alone.

    Returns:
        True when the grace period started now.
    """
    if tenant.status == TenantStatus.CANCELED:
        return False
    now = now or utcnow()
    tenant.status, tenant.paused_at = TenantStatus.CANCELED, now
    tenant.grace_until = now + timedelta(days=grace_days)
    tenant.past_due_since, tenant.updated_at = None, now
    tenant.save()
    return True


def pause_notice(tenant: Tenant, billing_url: str, retention_days: int) -> str:
    """The text a canceled tenant's chats get, in its language, depending on whether its data
    is still on the paused machine (``Notice.PAUSED``), archived (``ARCHIVED``, kept until the
    retention end) or gone (``ENDED``)."""
    notice, fields = pause_notice_kind(tenant, billing_url, retention_days)
    return render(notice, tenant.language, **fields)[1]


def pause_notice_kind(tenant: Tenant, billing_url: str, retention_days: int) -> tuple[Notice, dict]:
    """``(notice, fields)`` behind ``pause_notice``, for ``notices.tell``."""
    if tenant.archive_key and tenant.archived_at:
        until = tenant.archived_at + timedelta(days=retention_days)
        return Notice.ARCHIVED, {"until": _day(until), "url": billing_url}
    if tenant.grace_until and tenant.archived_at is None:
        return Notice.PAUSED, {"until": _day(tenant.grace_until), "url": billing_url}
    return Notice.ENDED, {"url": billing_url}


def is_paused(tenant: Tenant) -> bool:
    """True when the tenant's chats must not reach its agent (subscription ended)."""
    return tenant.status == TenantStatus.CANCELED


def pause_machine(tenant_id: int, provisioner: Provisioner, send: Send, billing_url: str,
                  retention_days: int) -> Machine | None:
    """Pause a canceled tenant's machine and tell the tenant (``pause_notice_kind``, through
    ``notices.tell``: every linked chat, the web chat and the e-mail).

    Runs in a Huey task after ``begin_grace``.  Does nothing when the tenant paid again in the
    meantime or its machine is not running (never provisioned, already paused or gone).

    Args:
        tenant_id: the tenant's id.
        provisioner: where machines come from.
        send: the ``send_notice`` task.
        billing_url: where the user resubscribes.
        retention_days: days an archive is kept (``HERMES_ARCHIVE_RETENTION_DAYS``).

    Returns:
        The machine (state ``paused``), or None when nothing was paused.

    Raises:
        ProvisioningError: the provider refused (the task retries).
    """
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if tenant is None or not is_paused(tenant) or machine is None or machine.state in (
            MachineState.PAUSED, MachineState.DEPROVISIONING, MachineState.DEPROVISIONED):
        return None
    provisioner.pause(str(tenant_id))
    machine.state, machine.boot_deadline_at, machine.updated_at = MachineState.PAUSED, None, utcnow()
    machine.detail = f"paused: subscription ended, data kept until {tenant.grace_until}"
    machine.save()
    notice, fields = pause_notice_kind(tenant, billing_url, retention_days)
    told = tell(tenant, notice, send, **fields)
    log.info("machine of tenant %s paused; %d place(s) told", tenant_id, told.count)
    return machine


def resume_machine(tenant_id: int, provisioner: Provisioner, policy: HealthPolicy) -> Machine | None:
    """Start a paused machine again for a tenant that resubscribed during its grace period.

    The machine goes back to ``booting``: it is ``ready`` when its agent says so
    (``machine_health``, which also tells the user); lifecycle events from before the resume
    are ignored (``provisioning_at``).

    Returns:
        The machine, or None when it was not paused or the tenant is not active.

    Raises:
        ProvisioningError: the provider refused (the task retries).
    """
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if tenant is None or tenant.status != TenantStatus.ACTIVE or machine is None \
            or machine.state != MachineState.PAUSED:
        return None
    status = provisioner.resume(str(tenant_id))
    now = utcnow()
    machine.state, machine.provisioning_at, machine.address = MachineState.BOOTING, now, status.address
    machine.boot_deadline_at = now + timedelta(seconds=policy.ready_timeout)
    machine.detail, machine.updated_at = RESUMED_DETAIL, now
    machine.save()
    return machine


@dataclass
class SweepReport:
    """What ``end_grace`` did: tenants archived, tenants whose archive failed, archives pruned."""

    archived: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)


def end_grace(now: datetime, provisioner: Provisioner, *, env: str, retention_days: int,
              request: Callable[[Tenant, str], object], send: Send, billing_url: str,
              bus_url: str | None = None, bus_ca_file: str = "") -> SweepReport:
    """Archive and destroy the machines whose grace period ended, telling each tenant
    (``Notice.ARCHIVED``); prune old archives.

    Args:
        now: the current time, naive UTC (tests pass a later one).
        provisioner: where machines come from; its ``store`` holds the archives.
        env: the environment label in archive keys (``archives/<env>/<tenant>/...``).
        retention_days: archives older than this many days (by their key's time) are deleted.
        request: ``provisioning.request_machine`` bound to its queue, called when a tenant
            paid again while its machine was being archived (it gets the archive back).
        send: the ``send_notice`` task (``notices.tell``).
        billing_url: where the user resubscribes.
        bus_url, bus_ca_file: to revoke the tenant's Redis bus user (``run_deprovisioning``).

    Returns:
        A ``SweepReport``; one tenant's failure (archive refused, provider down) is reported
        and retried on the next run, and does not stop the others.
    """
    report = SweepReport()
    due = Tenant.select().where((Tenant.status == TenantStatus.CANCELED) & (Tenant.grace_until <= now)
                                & Tenant.archived_at.is_null() & Tenant.deleted_at.is_null())
    for tenant in list(due):
        machine = Machine.get_or_none(Machine.tenant == tenant)
        if machine is None or machine.state == MachineState.DEPROVISIONED:
            continue
        machine.state, machine.updated_at = MachineState.DEPROVISIONING, utcnow()
        machine.save()
        try:
            provisioning.run_deprovisioning(tenant.id, provisioner, bus_url=bus_url,
                                            bus_ca_file=bus_ca_file)
        except Exception as exc:  # noqa: BLE001 - reported; the next hourly run retries
            log.error("end of grace for tenant %s failed: %s", tenant.id, exc)
            report.failures[tenant.id] = str(exc)
            continue
        report.archived.append(tenant.id)
        fresh = Tenant.get_by_id(tenant.id)
        if fresh.status == TenantStatus.ACTIVE and fresh.plan:
            request(fresh, fresh.plan)
        else:
            notice, fields = pause_notice_kind(fresh, billing_url, retention_days)
            tell(fresh, notice, send, **fields)
    report.pruned = prune_archives(provisioner.store, env, retention_days, now)
    return report


def prune_archives(store: ObjectStore, env: str, retention_days: int, now: datetime) -> list[str]:
    """Delete the archives of ``env`` older than ``retention_days`` (key time) and forget them
    (``Tenant.archive_key``); return the deleted keys."""
    cutoff = now - timedelta(days=retention_days)
    pruned = []
    for key in store.list_keys(f"archives/{env}/"):
        created = archive_created_at(key)
        if created is None or created.replace(tzinfo=None) >= cutoff:
            continue
        delete_archive(store, key)
        Tenant.update(archive_key=None, updated_at=utcnow()).where(Tenant.archive_key == key).execute()
        pruned.append(key)
    return pruned


def _delete_connections(tenant: Tenant, runtime) -> None:
    """Delete the tenant's connected accounts at Composio (its OAuth grants and API keys).

    Raises:
        control.services.composio_client.IntegrationError: Composio failed (retry).
    """
    accounts = [row.composio_account_id for row in Connection.select().where(
        (Connection.tenant == tenant) & Connection.composio_account_id.is_null(False))
        if row.composio_account_id]
    if not accounts:
        return
    provider = provider_from_settings(runtime.settings)
    for account_id in accounts:
        provider.delete_account(account_id)


def delete_tenant_data(tenant: Tenant, runtime, now: datetime | None = None) -> Tenant:
    """Delete everything a tenant left with us (account deletion); idempotent.

    The caller has cancelled the Stripe subscriptions first.  In order: the machine is destroyed
    WITHOUT an archive, the tenant's Redis bus user revoked, its bus streams deleted (both
    ``hermes:messages:{tenant}`` and ``hermes:events:{tenant}`` with their dead letters and
    idempotency keys: message texts and media URLs, ``Bus.delete_stream``), every deprovision archive
    (``archives/<env>/<tenant>/``), nightly backup (``backups/tenants/<tenant>/``) and file the
    user sent (``media/<env>/<tenant>/``, ``control.services.media``) deleted,
    then the rows of its account, password resets, chats, link tokens, messages, deliveries,
    usage and machine.  The tenant row stays as a tombstone: ``stripe_customer_id`` and the
    subscriptions keep late Stripe events idempotent and harmless (``billing`` ignores a
    deleted tenant), ``email`` and the preferences are cleared, ``deleted_at`` set.

    Args:
        tenant: the tenant.
        runtime: the ``control.runtime.Runtime`` (provisioner, settings).
        now: the deletion time (default now).

    Returns:
        The tombstone tenant.

    Raises:
        ProvisioningError: the machine could not be destroyed (nothing else was deleted; retry).
        wire.errors.WireError: the bus user could not be revoked or the streams deleted (retry).
    """
    # deferred: backups would pull the provisioner stack (tenacity, infra: ~70 ms) into web/workers
    from control.services.backups import store_from_settings

    settings, provisioner = runtime.settings, runtime.provisioner
    key = str(tenant.id)
    _delete_connections(tenant, runtime)
    provisioner.deprovision(key, archive=False)
    provisioning.revoke_bus_access(settings.bus_url, key, ca_file=settings.bus_ca_file)
    for stream in (messages_stream(key), events_stream(key)):  # message text, media URLs
        runtime.bus.delete_stream(stream)
    for store, prefix in ((provisioner.store, f"archives/{settings.env}/{key}/"),
                          (store_from_settings(settings), f"backups/tenants/{key}/")):
        for name in store.list_keys(prefix):
            store.delete(name)
    media.delete_tenant(media.store_from_settings(settings), settings.env, key)  # files sent
    now = now or utcnow()
    with write_transaction():
        accounts = Account.select(Account.id).where(Account.tenant == tenant)
        PasswordReset.delete().where(PasswordReset.account.in_(accounts)).execute()
        Account.delete().where(Account.tenant == tenant).execute()
        for model in (Delivery, Usage, Message, ChatIdentity, LinkToken, Machine, Connection):
            model.delete().where(model.tenant == tenant).execute()
        tenant = Tenant.get_by_id(tenant.id)
        if tenant.deleted_at is None:
            tenant.deleted_at = now
        tenant.email = tenant.timezone = tenant.language = tenant.model = tenant.preferences = None
        tenant.status, tenant.plan = TenantStatus.CANCELED, None
        tenant.past_due_since = tenant.grace_until = tenant.paused_at = None
        tenant.archive_key = tenant.archived_at = None
        # The MCP proxy credential and the sealed Composio endpoint go with the account.
        tenant.mcp_token_hash = tenant.mcp_upstream = None
        tenant.updated_at = now
        tenant.save()
    log.info("tenant %s: data deleted", key)
    return tenant

