"""Machine health from the agent's own lifecycle events, and the deadlines that watch them.

A machine is ready when its agent said so, never because the cloud API says ``running``
(DESIGN.md, "Agent lifecycle").  The delivery worker hands every lifecycle event of the
events streams to ``record_lifecycle``, with the tenant of the stream it was read from:

* ``ready`` → ``ready`` (``ready_at``), and the user is told (``notices.tell``: ready,
  resumed or restored);
* ``heartbeat`` → ``last_heartbeat_at``; an ``unhealthy`` machine is ``ready`` again;
* ``failed`` → ``failed`` with the agent's reason (a start-up failure is a configuration
  problem: retrying the same configuration cannot help), attention item, user told.

``check_machines`` (a periodic Huey task) enforces the deadlines: a machine still
``provisioning``/``booting`` at ``boot_deadline_at`` has timed out and is retried
(``retry_or_fail``); a ready machine without a lifecycle event for ``missed_heartbeats``
intervals becomes ``unhealthy`` (attention item ``agent_unhealthy``, alert
``HermesAgentUnhealthy``).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from peewee import fn

from control.models import (
    AttentionItem,
    Machine,
    MachineEvent,
    MachineEventKind,
    MachineState,
    utcnow,
)
from control.services.attention import raise_attention
from control.services.notices import Notice, Send, tell
from wire.protocol import Event

log = logging.getLogger(__name__)

#: ``enqueue(tenant_id, delay_seconds)``: schedule another provisioning attempt.
EnqueueRetry = Callable[[int, float], object]

# ``Machine.detail`` while a machine boots back from a pause or from an archive: the ready
# notice then says so (``Notice.RESUMED``, ``Notice.RESTORED``).
RESUMED_DETAIL = "resumed after resubscription"
RESTORED_DETAIL = "restored from archive"
# Lifecycle events are accepted in these states; a failed or deprovisioned machine ignores
# late events of an agent that is being replaced or removed.
_LISTENING = (MachineState.REQUESTED, MachineState.PROVISIONING, MachineState.BOOTING,
              MachineState.READY, MachineState.UNHEALTHY)


@dataclass(frozen=True)
class HealthPolicy:
    """Deadlines and retry budget (``control.settings.Settings`` documents each one).

    Attributes:
        ready_timeout: seconds from provisioning to the agent's ``ready`` event.
        heartbeat_interval: seconds between agent heartbeats.
        missed_heartbeats: intervals without a lifecycle event before ``unhealthy``.
        attempts: provisioning attempts, first included.
        retry_delay: seconds before the second attempt, doubled for each later one.
    """

    ready_timeout: float = 600.0
    heartbeat_interval: float = 30.0
    missed_heartbeats: int = 3
    attempts: int = 3
    retry_delay: float = 60.0

    @classmethod
    def from_settings(cls, settings) -> HealthPolicy:
        """Build the policy from ``control.settings.Settings``."""
        return cls(ready_timeout=settings.ready_timeout, heartbeat_interval=settings.heartbeat_interval,
                   missed_heartbeats=settings.missed_heartbeats, attempts=settings.provision_attempts,
                   retry_delay=settings.provision_retry_delay)

    def backoff(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential."""
        return self.retry_delay * 2 ** max(0, attempt - 1)


def record_lifecycle(tenant_id: int, event: Event, notify: Send) -> Machine | None:
    """Apply one agent lifecycle event to the machine of ``tenant_id``.

    The tenant is the one whose events stream the event was read from, never the event's own
    ``tenant`` field (an agent could name any tenant: ``control.services.event_guard``).
    Events written before the machine's current provisioning attempt started (an earlier
    agent's backlog, read after a reprovision) are ignored.

    Args:
        tenant_id: the tenant of the stream the event came from.
        event: an ``Event`` of kind ``lifecycle``.
        notify: the ``send_notice`` task (``notices.tell``).

    Returns:
        The updated machine, or None when the event was ignored.
    """
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None or machine.state not in _LISTENING or _stale(event, machine):
        return None
    if event.lifecycle == "failed":
        return fail_machine(machine, f"agent reported: {event.text}", notify)
    if event.lifecycle == "ready" or machine.state not in (MachineState.READY, MachineState.UNHEALTHY):
        return _mark_ready(machine, event, notify)
    return _heartbeat(machine)


def _stale(event: Event, machine: Machine) -> bool:
    if event.at is None or machine.provisioning_at is None:
        return False
    return event.at < machine.provisioning_at.replace(tzinfo=UTC).timestamp()


#: How an agent names its version at the start of its ``ready`` text (``agent.main``); anything
#: else (an old agent, a hostile VM) leaves the version unknown.
AGENT_VERSION = re.compile(r"hermes-max ([0-9A-Za-z.+-]{1,32});")


def _mark_ready(machine: Machine, event: Event, notify: Send) -> Machine:
    now = utcnow()
    was, detail = machine.state, machine.detail or ""
    named = AGENT_VERSION.match(event.text or "")
    machine.agent_version = named.group(1) if named else None
    machine.state, machine.ready_at, machine.last_heartbeat_at = MachineState.READY, now, now
    machine.boot_deadline_at, machine.detail, machine.updated_at = None, event.text, now
    machine.save()
    if was == MachineState.UNHEALTHY:
        MachineEvent.create(tenant=machine.tenant_id, kind=MachineEventKind.UP, at=now)
        _resolve("agent_unhealthy", machine.tenant_id, "the agent reported ready again")
        log.info("agent of tenant %s is answering again", machine.tenant_id)
    elif was != MachineState.READY:
        MachineEvent.create(tenant=machine.tenant_id, kind=MachineEventKind.PROVISIONED, at=now)
        _resolve("provisioning_failed", machine.tenant_id, "the agent reported ready")
        log.info("agent of tenant %s reported ready (%s)", machine.tenant_id, event.text)
        notice = (Notice.RESTORED if detail.startswith(RESTORED_DETAIL)
                  else Notice.RESUMED if detail.startswith(RESUMED_DETAIL) else Notice.READY)
        tell(machine.tenant, notice, notify)
    return machine


def _heartbeat(machine: Machine) -> Machine:
    now = utcnow()
    recovered = machine.state == MachineState.UNHEALTHY
    machine.state, machine.last_heartbeat_at, machine.updated_at = MachineState.READY, now, now
    machine.save()
    if recovered:
        MachineEvent.create(tenant=machine.tenant_id, kind=MachineEventKind.UP, at=now)
        _resolve("agent_unhealthy", machine.tenant_id, "the agent beats again")
        log.info("agent of tenant %s is beating again", machine.tenant_id)
    return machine


def _resolve(kind: str, tenant_id: int, why: str) -> None:
    """Resolve the tenant's open ``kind`` item because its cause cleared (``resolved_by`` "")."""
    (AttentionItem.update(resolved_at=utcnow(), resolved_by="", resolution=f"cause cleared: {why}")
     .where((AttentionItem.kind == kind) & (AttentionItem.subject == str(tenant_id))
            & AttentionItem.resolved_at.is_null()).execute())


def fail_machine(machine: Machine, reason: str, notify: Send) -> Machine:
    """Mark ``machine`` failed for good: attention item ``provisioning_failed``, user told.

    Returns:
        The machine, now ``failed``, its ``detail`` the reason.
    """
    now = utcnow()
    machine.state, machine.failed_at, machine.detail = MachineState.FAILED, now, reason
    machine.boot_deadline_at, machine.updated_at = None, now
    machine.save()
    MachineEvent.create(tenant=machine.tenant_id, kind=MachineEventKind.FAILED, at=now)
    log.error("machine of tenant %s failed: %s", machine.tenant_id, reason)
    raise_attention("provisioning_failed", str(machine.tenant_id), reason)
    tell(machine.tenant, Notice.FAILED, notify)
    return machine


def retry_or_fail(machine: Machine, reason: str, policy: HealthPolicy, enqueue: EnqueueRetry,
                  notify: Send) -> bool:
    """After a transient failure: request another attempt with backoff, or fail the machine.

    Returns:
        True when another attempt was scheduled; False when the attempts were used up.
    """
    if machine.attempts >= policy.attempts:
        fail_machine(machine, f"{reason} (after {machine.attempts} attempts)", notify)
        return False
    delay = policy.backoff(machine.attempts)
    machine.state, machine.boot_deadline_at = MachineState.REQUESTED, None
    machine.detail = f"attempt {machine.attempts} failed: {reason}; retrying in {delay:.0f}s"
    machine.updated_at = utcnow()
    machine.save()
    log.warning("machine of tenant %s: %s", machine.tenant_id, machine.detail)
    enqueue(machine.tenant_id, delay)
    return True


def check_machines(policy: HealthPolicy, notify: Send, enqueue: EnqueueRetry,
                   now: datetime | None = None) -> dict[str, list[int]]:
    """Enforce the ready deadline and the heartbeat; run every minute.

    Args:
        policy: deadlines and retry budget.
        notify: the ``send_notice`` task (``notices.tell``).
        enqueue: schedules a provisioning attempt.
        now: the current naive UTC time (tests pass one).

    Returns:
        ``{"retried": [...], "failed": [...], "unhealthy": [...]}`` tenant ids.
    """
    now = now or utcnow()
    report: dict[str, list[int]] = {"retried": [], "failed": [], "unhealthy": []}
    overdue = Machine.select().where(
        Machine.state.in_([MachineState.PROVISIONING, MachineState.BOOTING])
        & (Machine.boot_deadline_at <= now))
    for machine in overdue:
        reason = f"agent did not report ready within {policy.ready_timeout:.0f}s"
        retried = retry_or_fail(machine, reason, policy, enqueue, notify)
        report["retried" if retried else "failed"].append(machine.tenant_id)
    silent_since = now - timedelta(seconds=policy.heartbeat_interval * policy.missed_heartbeats)
    quiet = Machine.select().where(
        (Machine.state == MachineState.READY)
        & (fn.COALESCE(Machine.last_heartbeat_at, Machine.ready_at, Machine.updated_at) <= silent_since))
    for machine in quiet:
        updated = (Machine.update(state=MachineState.UNHEALTHY, updated_at=now)
                   .where((Machine.id == machine.id) & (Machine.state == MachineState.READY)).execute())
        if updated:
            last = machine.last_heartbeat_at or machine.ready_at or machine.updated_at
            # The outage began with the silence, not when it was noticed.
            MachineEvent.create(tenant=machine.tenant_id, kind=MachineEventKind.DOWN, at=last)
            log.warning("agent of tenant %s unhealthy: no lifecycle event since %s",
                        machine.tenant_id, last)
            raise_attention("agent_unhealthy", str(machine.tenant_id),
                            f"no heartbeat since {last:%Y-%m-%d %H:%M:%S} UTC "
                            f"({policy.missed_heartbeats} intervals of {policy.heartbeat_interval:.0f}s)")
            report["unhealthy"].append(machine.tenant_id)
    return report
