"""The fleet of mission control (issue 21): every machine, and the machine actions that
``hermes tenants power|resize|reprovision|deprovision`` and ``/ops/fleet`` share.

Each action only records the request and queues the Huey task that does the work
(``ControlTasks.restart_machine``, ``resize_machine``, ``provision_machine``,
``deprovision_machine``), as the CLI always did; each returns the machine's state before and after for the audit row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from control.db import write_transaction
from control.errors import BadRequest, Conflict, NotFound
from control.models import Machine, MachineState, Tenant, TenantStatus, utcnow
from control.services import provisioning, slo

PLANS = ("light", "heavy")
#: Machines the fleet page lists at most, by tenant id.
PAGE = 500


@dataclass(frozen=True)
class FleetRow:
    """One machine: its tenant (id, e-mail, status), plan, state, address, last heartbeat and
    ready time (naive UTC or None), the agent's version (None: unknown) and its uptime over
    30 days (0.0-1.0, ``slo.machine_uptime``; None while it does not serve)."""

    tenant_id: int
    email: str
    tenant_status: str
    plan: str
    state: str
    address: str
    last_heartbeat_at: datetime | None
    ready_at: datetime | None
    agent_version: str | None
    uptime: float | None

    def as_dict(self) -> dict:
        """JSON-ready fields (times ISO 8601 or None), for ``/ops/fleet.json``."""
        return {name: (value.isoformat() if isinstance(value, datetime) else value)
                for name, value in vars(self).items()}


def fleet(search: str = "") -> list[FleetRow]:
    """Machines by tenant id, at most ``PAGE``; ``search`` keeps tenants whose e-mail contains
    it, or the tenant with that id.  Four queries, whatever the fleet's size."""
    rows = Machine.select(Machine, Tenant.id, Tenant.email, Tenant.status).join(Tenant)
    search = search.strip()
    if search:
        rows = rows.where(Tenant.email.contains(search)
                          | (Tenant.id == (int(search) if search.isdigit() else -1)))
    uptime = slo.machine_uptime()
    return [FleetRow(tenant_id=m.tenant_id, email=m.tenant.email or "",
                     tenant_status=m.tenant.status, plan=m.plan, state=m.state,
                     address=m.address or "", last_heartbeat_at=m.last_heartbeat_at,
                     ready_at=m.ready_at, agent_version=m.agent_version,
                     uptime=uptime.get(m.tenant_id))
            for m in rows.order_by(Tenant.id).limit(PAGE)]


def _machine(tenant_id: int) -> Machine:
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine")
    return machine


def _state(machine: Machine) -> dict[str, str]:
    return {"state": machine.state, "plan": machine.plan}


def resize(tenant_id: int, plan: str,
           enqueue_resize: Callable[[int, str], object]) -> tuple[dict, dict]:
    """Queue a resize of a running machine to ``plan``.

    The provider decides when (``provisioning.run_resize``).

    Raises:
        BadRequest: ``plan`` is not one of ``PLANS``.
        NotFound: no machine.
    """
    if plan not in PLANS:
        raise BadRequest(f"plan must be one of {', '.join(PLANS)}")
    machine = _machine(tenant_id)
    enqueue_resize(tenant_id, plan)
    return _state(machine), {**_state(machine), "resize_to": plan}


def restart(tenant_id: int, enqueue_restart: Callable[[int], object]) -> tuple[dict, dict]:
    """Queue a restart of a serving machine's agent (``provisioning.run_restart``).

    Raises:
        NotFound: no machine.
        Conflict: the machine is not ``ready`` or ``unhealthy`` (nothing runs to restart).
    """
    return _queue_for_serving(tenant_id, "restart", enqueue_restart)


def pause(tenant_id: int, enqueue_pause: Callable[[int], object]) -> tuple[dict, dict]:
    """Queue an operator's pause of a serving machine (``provisioning.run_operator_pause``).

    Raises:
        NotFound: no machine.  Conflict: the machine is not ``ready`` or ``unhealthy``.
    """
    return _queue_for_serving(tenant_id, "pause", enqueue_pause)


def _queue_for_serving(tenant_id: int, action: str,
                       enqueue: Callable[[int], object]) -> tuple[dict, dict]:
    """Queue ``action`` of a ``ready`` or ``unhealthy`` machine; ``(before, after)``."""
    machine = _machine(tenant_id)
    if machine.state not in (MachineState.READY, MachineState.UNHEALTHY):
        raise Conflict(f"tenant {tenant_id}'s machine is {machine.state}: nothing runs to {action}")
    enqueue(tenant_id)
    return _state(machine), {**_state(machine), action: "queued"}


def resume(tenant_id: int, enqueue_resume: Callable[[int], object]) -> tuple[dict, dict]:
    """Queue the resume of a paused machine of an active tenant (``lifecycle.resume_machine``,
    the task a resubscription queues).

    Raises:
        NotFound: no machine.  Conflict: not paused, or the tenant is not active (a canceled
        tenant's machine is resumed by paying again).
    """
    machine = _machine(tenant_id)
    if machine.state != MachineState.PAUSED or machine.tenant.status != TenantStatus.ACTIVE:
        raise Conflict(f"tenant {tenant_id} is {machine.tenant.status} with its machine "
                       f"{machine.state}: only an active tenant's paused machine resumes")
    enqueue_resume(tenant_id)
    return _state(machine), {**_state(machine), "resume": "queued"}


def reprovision(tenant_id: int, enqueue: Callable[[int], object]) -> tuple[dict, dict]:
    """``provisioning.reprovision`` for a tenant id; the after state carries its outcome.

    Raises:
        NotFound: no such tenant.  Conflict: canceled, or no plan.
    """
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id}")
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    before = _state(machine) if machine else None
    outcome = provisioning.reprovision(tenant, enqueue)
    return before or {}, {**_state(_machine(tenant_id)), "outcome": outcome}


def deprovision(tenant_id: int, enqueue: Callable[[int], object]) -> tuple[dict, dict]:
    """Mark the machine ``deprovisioning`` and queue its archive and deletion.

    Idempotent: deprovisioning a deprovisioned machine again finds nothing to delete.

    Raises:
        NotFound: no machine.
    """
    with write_transaction():
        machine = _machine(tenant_id)
        before = _state(machine)
        Machine.update(state=MachineState.DEPROVISIONING, updated_at=utcnow()).where(
            Machine.id == machine.id).execute()
    enqueue(tenant_id)
    return before, {**before, "state": MachineState.DEPROVISIONING.value}
