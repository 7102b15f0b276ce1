"""Usage accounting: one ``Usage`` row per LLM call reported by an agent."""

from __future__ import annotations

import re

from control.models import Tenant, Usage
from wire.protocol import Event

JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def record_usage(tenant: Tenant, event: Event) -> None:
    """Store one ``Usage`` row per LLM call reported in the event's ``usage``, for ``tenant``
    (the tenant whose events stream the event came from, never the event's own field).

    ``usage`` is ``{"model", "input_tokens", "output_tokens", "cost_cents", "latency_ms"}``,
    optionally with ``"calls": [same shape, ...]`` (one entry per LLM call of the turn), each
    call optionally with the ``goal_id`` / ``job_id`` it worked for (``agent.usage.CallRecord``).
    """
    usage = event.usage or {}
    calls = usage.get("calls") or ([usage] if usage.get("model") else [])
    if Usage.select().where((Usage.tenant == tenant) & (Usage.envelope_id == event.message_id)).exists():
        return
    for call in calls:
        Usage.create(tenant=tenant, envelope_id=event.message_id, model=str(call.get("model", "")),
                     input_tokens=int(call.get("input_tokens") or 0),
                     output_tokens=int(call.get("output_tokens") or 0),
                     cost_cents=float(call.get("cost_cents") or 0.0),
                     latency_ms=int(call.get("latency_ms") or 0),
                     goal_id=goal_id(call.get("goal_id")), job_id=job_id(call.get("job_id")))


def goal_id(value: object) -> int | None:
    """The call's goal number if it is one (a positive integer below 2**31), else None: the
    field comes from a tenant VM, so anything else is dropped, not stored."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31:
        return value
    return None


def job_id(value: object) -> str | None:
    """The call's job id if it looks like one (``JOB_ID``: 1-64 letters, digits, ``_`` or
    ``-``), else None, for the same reason."""
    return value if isinstance(value, str) and JOB_ID.fullmatch(value) else None
