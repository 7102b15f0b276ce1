"""The provisioning ledger of mission control (issue 21): every machine's latest provisioning
job as a per-step timeline, read from the ``Machine`` row that ``control.services.provisioning``
and ``machine_health`` keep.

Steps (``STEPS``): ``queued`` (``requested_at``) → ``stack up`` (the provider is creating the
server, from ``provisioning_at``) → ``server running`` (the provider reported it running: the
machine has an address) → ``agent ready`` (the agent's lifecycle ``ready`` event,
``ready_at``).  A failed job names the step that failed: ``stack up`` when the provider never
gave an address, else ``agent ready`` (the ready deadline passed); its error is the machine's
``detail``.  Retrying is ``provisioning.reprovision``, the same call as
``hermes tenants reprovision``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from control.errors import NotFound
from control.models import Machine, MachineState, Tenant
from control.services import provisioning

STEPS = ("queued", "stack up", "server running", "agent ready")
#: Filters of the ledger page: ``failed``, ``in_progress`` (not yet ready), ``all``.
FILTERS = {
    "failed": [MachineState.FAILED],
    "in_progress": [MachineState.REQUESTED, MachineState.PROVISIONING, MachineState.BOOTING],
    "all": [],
}
#: Rows the ledger shows at most, newest request first.
PAGE = 200


@dataclass(frozen=True)
class Step:
    """One step of a job: ``status`` is ``done`` | ``current`` | ``failed`` | ``todo``;
    ``at`` when it is known (naive UTC)."""

    name: str
    status: str
    at: datetime | None


@dataclass(frozen=True)
class Job:
    """A machine's latest provisioning job: its tenant, plan, state, attempts, the steps, the
    error (``""`` unless failed) and whether ``retry`` would start it again."""

    tenant_id: int
    email: str
    plan: str
    state: str
    attempts: int
    requested_at: datetime
    steps: list[Step]
    error: str
    retryable: bool


def _reached(machine: Machine) -> int:
    """How many steps are done (1-4), from the machine's state and fields."""
    state = MachineState(machine.state)
    if state in (MachineState.READY, MachineState.UNHEALTHY):
        return 4
    if state == MachineState.BOOTING:
        return 3
    if state == MachineState.FAILED:
        # ``fail_machine`` keeps the address: with one, the server had come up.
        return 3 if machine.address else 1
    if state in (MachineState.REQUESTED, MachineState.PROVISIONING):
        return 1
    return 4 if machine.ready_at else 1  # paused, deprovisioning, deprovisioned


def timeline(machine: Machine) -> list[Step]:
    """The steps of ``machine``'s latest job (see the module docstring)."""
    done = _reached(machine)
    failed = machine.state == MachineState.FAILED
    stamps = [machine.requested_at, machine.provisioning_at, None, machine.ready_at]
    steps = []
    for index, name in enumerate(STEPS):
        if index < done:
            steps.append(Step(name, "done", stamps[index]))
        elif index == done:
            steps.append(Step(name, "failed", machine.failed_at) if failed
                         else Step(name, "current", None))
        else:
            steps.append(Step(name, "todo", None))
    return steps


def job(machine: Machine, email: str | None) -> Job:
    """The ``Job`` of ``machine`` (``email``: its tenant's)."""
    failed = machine.state == MachineState.FAILED
    return Job(tenant_id=machine.tenant_id, email=email or "", plan=machine.plan,
               state=machine.state, attempts=machine.attempts, requested_at=machine.requested_at,
               steps=timeline(machine), error=machine.detail if failed else "",
               retryable=machine.state in (MachineState.FAILED, MachineState.UNHEALTHY,
                                           MachineState.DEPROVISIONED))


def ledger(which: str = "all") -> list[Job]:
    """The jobs of ``FILTERS[which]`` (unknown: ``all``), newest request first, at most ``PAGE``."""
    rows = Machine.select(Machine, Tenant.id, Tenant.email).join(Tenant)
    states = FILTERS.get(which, [])
    if states:
        rows = rows.where(Machine.state.in_([s.value for s in states]))
    return [job(m, m.tenant.email) for m in rows.order_by(Machine.requested_at.desc()).limit(PAGE)]


def get(tenant_id: int) -> Job:
    """The job of the tenant's machine; raises NotFound."""
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine")
    return job(machine, machine.tenant.email)


def retry(tenant_id: int, enqueue: Callable[[int], object]) -> tuple[dict, dict, str]:
    """Start a failed (or unhealthy, or deprovisioned) tenant's provisioning again.

    Args:
        tenant_id: the tenant.
        enqueue: queues ``run_provisioning`` (``ControlTasks.provision_machine``).

    Returns:
        ``(before, after, outcome)``: the machine's state and detail around the call, and
        ``provisioning.reprovision``'s outcome (``requested`` | ``already_ready`` |
        ``in_progress``).

    Raises:
        NotFound: no such tenant or machine.  Conflict: the tenant is canceled or has no plan.
    """
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    if tenant is None or machine is None:
        raise NotFound(f"tenant {tenant_id} has no machine")
    before = {"state": machine.state, "detail": machine.detail}
    outcome = provisioning.reprovision(tenant, enqueue)
    machine = Machine.get_by_id(machine.id)
    return before, {"state": machine.state, "detail": machine.detail}, outcome
