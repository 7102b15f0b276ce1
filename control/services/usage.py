"""Usage accounting: one ``Usage`` row per LLM call reported by an agent."""

from __future__ import annotations

from control.models import Tenant, Usage
from wire.protocol import Event


def record_usage(tenant: Tenant, event: Event) -> None:
    """Store one ``Usage`` row per LLM call reported in the event's ``usage``, for ``tenant``
    (the tenant whose events stream the event came from, never the event's own field).

    ``usage`` is ``{"model", "input_tokens", "output_tokens", "cost_cents", "latency_ms"}``,
    optionally with ``"calls": [same shape, ...]`` (one entry per LLM call of the turn).
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
                     latency_ms=int(call.get("latency_ms") or 0))
