"""Provisioning: one machine per tenant, driven through the ``Provisioner`` interface.

States (``control.models.MachineState``): ``requested`` → ``provisioning`` → ``booting`` →
``ready``, each with its timestamp.  ``request_machine`` is idempotent, so a replayed Stripe
event never makes a second machine; the slow work runs in a Huey task that calls
``run_provisioning``.  A machine is ready only when its agent's lifecycle ``ready`` event
arrives (``control.services.machine_health``), never because the provider says ``running``.

Nothing paid is forgotten (issue 19, finding 8): the ``requested`` row is the outbox of the
provisioning task.  ``request_machine`` commits it before the task is queued; when queuing
fails, nothing is lost: ``requeue_requested`` (a periodic Huey task) queues a task for every
machine that has waited in ``requested`` for ``REQUEUE_AFTER`` seconds with none queued, and
raises the attention item ``machine_stuck_requested`` once it has waited ``STUCK_AFTER``
seconds (the alert ``HermesMachineStuckRequested`` reads the same age from
``hermes_machine_requested_age_seconds``).

Failures: a transient one (``is_transient``: Hetzner 429/5xx, a bus that cannot be reached)
puts the machine back to ``requested`` and raises, so the Huey task's retries (with backoff)
run it again; the last attempt, or a permanent failure, ends in ``failed`` with an attention
item and the user told (``machine_health.fail_machine``).  ``reprovision`` starts over.

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
from dataclasses import replace
from datetime import datetime, timedelta

from peewee import fn

from control.db import write_transaction
from control.errors import Conflict, NotFound, ProvisioningError
from control.models import (
    AttentionItem,
    Machine,
    MachineState,
    PoolServer,
    Subscription,
    Tenant,
    TenantStatus,
    utcnow,
)
from control.providers.base import MachineSpec, MachineStatus, Provisioner, ServerState
from control.services import agent_settings, bus_acl, linking, llm_gateway, warm_pool
from control.services.attention import raise_attention
from control.services.machine_health import RESTORED_DETAIL, HealthPolicy, fail_machine
from control.services.notices import Send
from control.services.secrets_box import SecretsBox
from wire.errors import WireError
from wire.redis_bus import connect

log = logging.getLogger(__name__)

#: ``ProvisioningError.code`` of a failure worth retrying, for providers without a richer cause.
TRANSIENT_CODE = "provisioning_transient"
# hcloud ``APIException.code`` values that mean "try again later" (docs.hetzner.cloud, "Errors").
_HCLOUD_TRANSIENT = frozenset({"rate_limit_exceeded", "server_error", "unavailable", "timeout",
                               "locked", "conflict", "resource_unavailable"})
_ACTIVE = (MachineState.READY, MachineState.UNHEALTHY)
#: Seconds a machine waits in ``requested`` before the sweep may queue its task again: longer than
#: the moment between ``request_machine``'s commit and its enqueue, so a fresh request is never
#: queued twice.
REQUEUE_AFTER = 60
#: Seconds in ``requested`` after which an operator is told (issue 19: "an alert fires when one is
#: older than 10 minutes"; ``dashboards/alerts/hermes.rules.yml`` uses the same threshold).
STUCK_AFTER = 600
STUCK_KIND = "machine_stuck_requested"


def is_transient(exc: BaseException | None) -> bool:
    """Whether a provisioning failure is worth another attempt.

    True when ``exc`` or an exception in its cause chain is: a ``ProvisioningError`` with code
    ``TRANSIENT_CODE``; a Pulumi ``StackOperationError`` whose kind is retryable
    (``hetzner.workspace.RETRYABLE_KINDS``: Hetzner 429, 5xx, a held lock); an hcloud
    ``APIException`` with a transient code; or a ``WireError`` (the bus was unreachable).
    """
    for _ in range(10):
        if exc is None:
            return False
        if getattr(exc, "code", None) == TRANSIENT_CODE or getattr(exc, "retryable", False) is True:
            return True
        if type(exc).__name__ == "APIException" and getattr(exc, "code", None) in _HCLOUD_TRANSIENT:
            return True
        if isinstance(exc, WireError):
            return True
        exc = exc.__cause__
    return False


def request_machine(tenant: Tenant, plan: str, enqueue: Callable[[int], object],
                    enqueue_resize: Callable[[int, str], object] | None = None,
                    enqueue_resume: Callable[[int], object] | None = None) -> Machine:
    """Record that ``tenant`` needs a machine on ``plan`` and enqueue provisioning once.

    Args:
        tenant: the paying tenant.
        plan: ``light`` or ``heavy``.
        enqueue: called with the tenant id to schedule ``run_provisioning`` (a Huey task).
        enqueue_resize: called with ``(tenant id, plan)`` when the tenant already has a machine
            on another plan (a Stripe plan change), to schedule ``run_resize``.
        enqueue_resume: called with the tenant id when its machine is paused (it resubscribed
            during the grace period), to schedule ``lifecycle.resume_machine``.

    Returns:
        The tenant's machine row (new, or the existing one untouched unless it had failed or
        been deprovisioned, in which case it is requested again: with the tenant's archive
        restored onto it when it has one, ``run_provisioning``).  When queuing the task fails
        the row stays ``requested`` and ``requeue_requested`` queues it later (logged, not
        raised: the request itself is stored, so the caller, e.g. Stripe's webhook, succeeded).
    """
    with write_transaction():
        machine, created = Machine.get_or_create(tenant=tenant, defaults={"plan": plan})
        again = not created and machine.state in (MachineState.FAILED, MachineState.DEPROVISIONED)
        if again:
            machine.state, machine.plan, machine.requested_at = MachineState.REQUESTED, plan, utcnow()
            machine.attempts, machine.updated_at = 0, utcnow()
            machine.save()
    if created or again:
        try:
            enqueue(tenant.id)
        except Exception:  # any queue failure (SQLite, Redis...): the sweep queues it later
            log.exception("could not queue provisioning of tenant %s; the sweep will", tenant.id)
    elif machine.state == MachineState.PAUSED and enqueue_resume is not None:
        enqueue_resume(tenant.id)
    elif machine.state in _ACTIVE and machine.plan != plan and enqueue_resize is not None:
        enqueue_resize(tenant.id, plan)
    return machine


def requeue_requested(enqueue: Callable[[int], object], queued: Callable[[], set[int]],
                      now: datetime | None = None) -> dict[str, list[int]]:
    """Queue provisioning again for paid machines left in ``requested``; run every minute.

    A machine qualifies when it has been ``requested`` (``updated_at``: every move into that
    state sets it) for ``REQUEUE_AFTER`` seconds, its tenant is paying (``active`` or
    ``past_due``, not deleted) and no provisioning task for it is queued or scheduled (a retry
    waiting out its backoff is left alone).  Idempotent: a second run finds the task queued.
    ``run_provisioning`` itself only acts on a ``requested`` machine and the provider holds its
    per-stack lock, so a task queued twice still makes one machine.

    Args:
        enqueue: queues ``run_provisioning`` for a tenant id (the Huey task).
        queued: returns the tenant ids that have a provisioning task queued or scheduled.
        now: the current naive UTC time (tests pass one).

    Returns:
        ``{"requeued": [tenant ids], "stuck": [tenant ids waiting STUCK_AFTER or longer]}``;
        each stuck tenant has an open ``machine_stuck_requested`` attention item, resolved by
        the first run after its machine left ``requested``.
    """
    now = now or utcnow()
    report: dict[str, list[int]] = {"requeued": [], "stuck": []}
    waiting = list(Machine.select().join(Tenant).where(
        (Machine.state == MachineState.REQUESTED)
        & (Machine.updated_at <= now - timedelta(seconds=REQUEUE_AFTER))
        & Tenant.status.in_([TenantStatus.ACTIVE, TenantStatus.PAST_DUE]) & Tenant.deleted_at.is_null()))
    in_queue = queued() if waiting else set()
    for machine in waiting:
        if machine.tenant_id not in in_queue:
            try:
                enqueue(machine.tenant_id)
            except Exception:  # the queue is down: the next run tries again
                log.exception("could not queue provisioning of tenant %s", machine.tenant_id)
            else:
                report["requeued"].append(machine.tenant_id)
                log.warning("machine of tenant %s waited in requested since %s UTC with no task "
                            "queued; queued one", machine.tenant_id, machine.updated_at)
        if machine.updated_at <= now - timedelta(seconds=STUCK_AFTER):
            report["stuck"].append(machine.tenant_id)
            since = f"{machine.updated_at:%Y-%m-%d %H:%M:%S}"
            raise_attention(STUCK_KIND, str(machine.tenant_id),
                            f"paid machine waiting in requested since {since} UTC; is the control "
                            "plane's Huey consumer running? (runbooks/machine-stuck-requested.md)")
    stuck = {str(t) for t in report["stuck"]}
    for item in AttentionItem.select().where((AttentionItem.kind == STUCK_KIND)
                                             & AttentionItem.resolved_at.is_null()):
        if item.subject not in stuck:
            AttentionItem.update(resolved_at=now).where(AttentionItem.id == item.id).execute()
    return report


def requested_age(now: datetime | None = None) -> float:
    """Seconds the oldest machine has waited in ``requested`` (0.0 when none does)."""
    now = now or utcnow()
    oldest = (Machine.select(Machine.updated_at).where(Machine.state == MachineState.REQUESTED)
              .order_by(Machine.updated_at).first())
    return max(0.0, (now - oldest.updated_at).total_seconds()) if oldest is not None else 0.0


def reprovision(tenant: Tenant, enqueue: Callable[[int], object]) -> str:
    """Give a failed, deprovisioned or unhealthy tenant a fresh provisioning request; idempotent.

    Args:
        tenant: the tenant.
        enqueue: called with the tenant id to schedule ``run_provisioning``.

    Returns:
        ``requested`` (a new attempt was queued), ``already_ready`` or ``in_progress``
        (requested, provisioning, booting or deprovisioning: nothing done).

    Raises:
        Conflict: the tenant is canceled or has no plan, so it must not get a machine.
    """
    if tenant.status == TenantStatus.CANCELED or not tenant.plan:
        raise Conflict(f"tenant {tenant.id} is {tenant.status} (plan {tenant.plan}): "
                       "no machine to provision")
    with write_transaction():
        machine, created = Machine.get_or_create(tenant=tenant, defaults={"plan": tenant.plan})
        if machine.state == MachineState.READY:
            return "already_ready"
        again = (Machine.update(state=MachineState.REQUESTED, requested_at=utcnow(), attempts=0,
                                boot_deadline_at=None, detail="reprovision requested",
                                updated_at=utcnow())
                 .where((Machine.id == machine.id) & Machine.state.in_(
                     [MachineState.FAILED, MachineState.DEPROVISIONED, MachineState.UNHEALTHY]))
                 .execute())
    if not (created or again):
        return "in_progress"
    enqueue(tenant.id)
    return "requested"


def run_provisioning(tenant_id: int, provisioner: Provisioner, agent_env: dict[str, str],
                     link_ttl: int, policy: HealthPolicy | None = None,
                     notify: Send | None = None, box: SecretsBox | None = None) -> Machine:
    """Have the provider create the tenant's machine, then wait (``booting``) for its agent.

    With ``box``, a free warm-pool server of the plan is claimed first (issue 22,
    ``_claim_from_pool``): the provider hands it over and its bootstrap fetches the sealed
    config; with none free (or a restore to do) the machine is created cold.

    The first link token is issued once the provider accepted the machine; it is shown
    (``hermes tenants link-token``) only once the agent reported ready.

    A tenant with an ``archive_key`` (canceled, archived, and resubscribed within the archive
    retention, ``control.services.lifecycle``) gets that archive restored onto the machine
    before its agent serves anyone (``MachineSpec.restore_archive_key``); once restored, the
    key is forgotten (the archive object stays until its retention ends), so a later
    reprovision never rolls the data back.

    Args:
        tenant_id: the tenant's id.
        provisioner: where machines come from.
        agent_env: environment for the agent (bus URL, LLM settings); the tenant id, a fresh
            agent token and a fresh LLM-gateway token (as the key of each gateway URL,
            ``llm_gateway.with_token``) are added here, and a Redis bus URL (the admin's) is replaced by the
            tenant's own ACL user's URL (``tenant_bus_url``).
        link_ttl: link token lifetime in seconds.
        policy: ready deadline and attempt budget (default ``HealthPolicy()``).
        notify: the ``send_notice`` task, telling the tenant when the machine fails
            (``notices.tell``).
        box: seals a claimed pool server's config at rest; ``None``: no warm pool.

    Returns:
        The machine row: ``booting`` (or already ``ready``) on success, ``failed`` after a
        permanent failure or the last attempt; unchanged when it is not waiting to be
        provisioned (ready, booting, failed, deprovisioning...).

    Raises:
        NotFound: the tenant has no machine request.
        ProvisioningError: a transient failure with attempts left; the machine is back to
            ``requested`` and the Huey task retries.
    """
    policy = policy or HealthPolicy()
    notify = notify or (lambda channel, identity, text: None)
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine request")
    if machine.state not in (MachineState.REQUESTED, MachineState.PROVISIONING):
        return machine
    now = utcnow()
    machine.state, machine.provisioning_at = MachineState.PROVISIONING, now
    machine.attempts, machine.updated_at = machine.attempts + 1, now
    machine.boot_deadline_at = now + timedelta(seconds=policy.ready_timeout)
    machine.save()
    env = {**agent_settings.agent_env_for(agent_env, machine.plan), "HERMES_TENANT": str(tenant_id),
           "HERMES_AGENT_TOKEN": secrets.token_urlsafe(32)}
    # A fresh LLM-gateway token with every machine: the old VM's stops working.
    env = llm_gateway.with_token(env, llm_gateway.issue(tenant_id))
    try:
        if env.get("HERMES_BUS_URL"):
            try:
                env["HERMES_BUS_URL"] = tenant_bus_url(env["HERMES_BUS_URL"], str(tenant_id),
                                                       ca_file=env.get("HERMES_BUS_CA_FILE", ""))
            except WireError as exc:
                raise ProvisioningError(f"could not grant the agent bus access: {exc}") from exc
        restore = machine.tenant.archive_key
        spec = MachineSpec(tenant=str(tenant_id), plan=machine.plan, env=env,
                           restore_archive_key=restore)
        status = _claim_from_pool(spec, provisioner, box) if box is not None and not restore \
            else None
        if status is None:
            status = provisioner.provision(spec)
        if status.state not in (ServerState.RUNNING, ServerState.PROVISIONING):
            raise ProvisioningError(f"machine is {status.state}: {status.detail}", code=TRANSIENT_CODE)
    except ProvisioningError as exc:
        transient = is_transient(exc)
        if not transient or machine.attempts >= policy.attempts:
            suffix = f" (after {machine.attempts} attempts)" if transient else ""
            return fail_machine(machine, f"{exc}{suffix}", notify)
        machine.state, machine.boot_deadline_at = MachineState.REQUESTED, None
        machine.detail = f"attempt {machine.attempts} failed: {exc}; retrying"
        machine.updated_at = utcnow()
        machine.save()
        log.warning("provisioning tenant %s: %s", tenant_id, machine.detail)
        raise
    linking.current_token(machine.tenant, link_ttl)
    now = utcnow()
    waiting = [MachineState.PROVISIONING]
    changes = {"state": MachineState.BOOTING, "address": status.address, "detail": status.detail,
               "boot_deadline_at": now + timedelta(seconds=policy.ready_timeout), "updated_at": now}
    if restore:
        Tenant.update(archive_key=None, updated_at=now).where(Tenant.id == tenant_id).execute()
        # On a VM the image's agent ran briefly before the restore replaced its stores: its
        # lifecycle events (even a "ready") predate this and are ignored (machine_health).
        waiting += [MachineState.READY, MachineState.UNHEALTHY]
        changes["provisioning_at"] = now
        changes["detail"] = f"{RESTORED_DETAIL} {restore}: {status.detail}"
    (Machine.update(**changes)
     .where((Machine.id == machine.id) & Machine.state.in_(waiting)).execute())
    log.info("machine for tenant %s is %s at %s; waiting for its agent's ready event", tenant_id,
             status.state, status.address)
    return Machine.get_by_id(machine.id)


def _claim_from_pool(spec: MachineSpec, provisioner: Provisioner,
                     box: SecretsBox) -> MachineStatus | None:
    """Hand the tenant a warm-pool server (``control.services.warm_pool``), if one is free.

    Returns:
        The machine's status once the provider made the pool server the tenant's and its boot
        config is sealed for the server to fetch; ``None`` when the pool has none for the plan
        or the hand-over failed (the server is released and the caller creates one cold).
    """
    row = warm_pool.claim(int(spec.tenant), spec.plan, provisioner.pool_snapshot())
    if row is None:
        return None
    try:
        claim = provisioner.claim_pool_server(row.provider_id, spec)
    except ProvisioningError as exc:
        log.warning("tenant %s: pool server %s could not be handed over (%s); creating one cold",
                    spec.tenant, row.provider_id, exc)
        warm_pool.release(row)
        return None
    warm_pool.assign(row, claim.boot_config, box, claim.status.address)
    return replace(claim.status, detail=f"warm pool server {row.provider_id}: {claim.status.detail}")


def run_deprovisioning(tenant_id: int, provisioner: Provisioner, bus_url: str | None = None,
                       bus_ca_file: str = "") -> Machine:
    """Archive and delete the tenant's machine, then revoke its LLM-gateway token and bus access;
    state ``deprovisioned``.

    The archive's key and time are recorded on the tenant (``archive_key``, ``archived_at``)
    for a restore when it resubscribes (``control.services.lifecycle``).

    Args:
        tenant_id: the tenant's id.
        provisioner: where machines come from.
        bus_url: the control plane's bus URL; for a Redis bus the tenant's ACL user is deleted
            (``revoke_bus_access``).  None or a SQLite URL: nothing to revoke.
        bus_ca_file: PEM CA verifying a ``rediss://`` bus (``""``: the system's CAs).

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
        archive = provisioner.deprovision(str(tenant_id), archive=True)
    except ProvisioningError as exc:
        raise_attention("deprovisioning_failed", str(tenant_id), str(exc))
        raise
    if archive is not None:
        Tenant.update(archive_key=archive.key, archived_at=utcnow(), updated_at=utcnow()).where(
            Tenant.id == tenant_id).execute()
    llm_gateway.revoke(tenant_id)
    if bus_url:
        try:
            revoke_bus_access(bus_url, str(tenant_id), ca_file=bus_ca_file)
        except WireError as exc:
            raise_attention("bus_revoke_failed", str(tenant_id), str(exc))
            raise
    machine.state, machine.address, machine.updated_at = MachineState.DEPROVISIONED, None, utcnow()
    machine.save()
    # The pool server it once claimed is gone with it; a resubscription may claim again.
    PoolServer.delete().where(PoolServer.tenant == tenant_id).execute()
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


def run_restart(tenant_id: int, provisioner: Provisioner) -> Machine:
    """Restart a serving machine's agent (``Provisioner.restart``) and say so in ``detail``.

    The machine keeps its state: its agent's next heartbeat or ``ready`` keeps it ``ready``,
    and a reboot longer than the missed heartbeats makes it ``unhealthy`` until then.

    Raises:
        NotFound: the tenant has no machine.
        Conflict: the machine is not ``ready`` or ``unhealthy`` (nothing runs to restart).
        ProvisioningError: the provider refused (the task retries).
    """
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine")
    if machine.state not in (MachineState.READY, MachineState.UNHEALTHY):
        raise Conflict(f"tenant {tenant_id}'s machine is {machine.state}: nothing runs to restart")
    provisioner.restart(str(tenant_id))
    machine.detail, machine.updated_at = "agent restarted by an operator", utcnow()
    machine.save()
    return machine


def run_operator_pause(tenant_id: int, provisioner: Provisioner) -> Machine | None:
    """Stop a serving machine's agent at an operator's request (``Provisioner.pause``: the
    data is kept) and mark it ``paused``; its users' messages wait on the bus until it is
    resumed (``lifecycle.resume_machine``).  Does nothing when the machine stopped serving in
    the meantime.

    Returns:
        The machine, now ``paused``, or None when nothing was paused.

    Raises:
        ProvisioningError: the provider refused (the task retries).
    """
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None or machine.state not in (MachineState.READY, MachineState.UNHEALTHY):
        return None
    provisioner.pause(str(tenant_id))
    machine.state, machine.boot_deadline_at, machine.updated_at = MachineState.PAUSED, None, utcnow()
    machine.detail = "paused by an operator"
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
    apply_resize = getattr(provisioner, "apply_scheduled_resize", None)
    if scheduled is None or apply_resize is None:
        return []
    done = []
    for record in scheduled():
        period_end = (Subscription.select(fn.MAX(Subscription.current_period_end))
                      .where(Subscription.tenant == int(record.tenant)).scalar())
        if period_end is None or period_end > utcnow():
            continue
        status = apply_resize(record.tenant)
        if status is not None:
            Machine.update(plan=status.plan or record.to_plan, detail=status.detail,
                           updated_at=utcnow()).where(Machine.tenant == int(record.tenant)).execute()
            done.append(int(record.tenant))
    return done


def is_redis_url(url: str) -> bool:
    """True for a Redis bus URL (``redis://`` or ``rediss://``)."""
    return url.startswith(("redis://", "rediss://"))


def tenant_bus_url(bus_url: str, tenant: str, ca_file: str = "") -> str:
    """Return the bus URL for ``tenant``'s agent, granting it bus access first.

    Args:
        bus_url: the control plane's bus URL (for Redis: the admin user's).
        tenant: the tenant id.
        ca_file: PEM CA verifying a ``rediss://`` bus (``""``: the system's CAs).

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
    with _redis_admin(bus_url, ca_file) as admin:
        return bus_acl.grant(admin, tenant)


def revoke_bus_access(bus_url: str, tenant: str, ca_file: str = "") -> bool:
    """Delete ``tenant``'s Redis ACL user (its open connections are closed); idempotent.

    Returns:
        True when a user was deleted; False when there was none or the bus is not Redis.

    Raises:
        BusAuthError, BusUnavailable: as for ``tenant_bus_url``.
    """
    if not is_redis_url(bus_url):
        return False
    with _redis_admin(bus_url, ca_file) as admin:
        return bus_acl.revoke(admin, tenant)


@contextmanager
def _redis_admin(bus_url: str, ca_file: str = ""):
    """An admin Redis connection for ACL changes, closed afterwards."""
    admin = connect(bus_url, ca_file=ca_file)
    try:
        yield admin
    finally:
        admin.close()


def ready_tenant_ids() -> list[int]:
    """Return ids of tenants whose agent may be publishing events: the delivery worker reads
    their events streams.

    Besides ``ready`` machines that includes those still being provisioned or booting (their
    agent's lifecycle ``ready`` event must be read for them to become ready) and unhealthy
    ones (their next heartbeat makes them ready again).
    """
    live = [MachineState.REQUESTED, MachineState.PROVISIONING, MachineState.BOOTING,
            MachineState.READY, MachineState.UNHEALTHY]
    return [m.tenant_id for m in Machine.select(Machine.tenant).where(Machine.state.in_(live))]
