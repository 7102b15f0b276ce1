"""The mission-control overview (issue 21): the fleet's figures in one read.

Each figure is one aggregate query (the bench ``bench/ops_overview.py`` times them with 1,000
tenants and 100,000 messages); none walks rows in Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from peewee import Case, fn

from control.models import (
    AttentionItem,
    Delivery,
    DeliveryState,
    LlmCall,
    Machine,
    Message,
    Tenant,
    TenantStatus,
    utcnow,
)
from control.services import audit, ops_dead_letters
from wire.bus import Bus
from wire.errors import WireError

#: Window of "messages per minute" (minutes): long enough to smooth a burst, short enough to
#: show a stall within minutes.
RATE_WINDOW_MINUTES = 5
#: Window of the error rates and of "active users" (hours).
ERROR_WINDOW_HOURS = 1
ACTIVE_WINDOW_HOURS = 24


@dataclass(frozen=True)
class Overview:
    """What the overview page shows.

    Attributes:
        machines: ``{state: count}``.
        paying: tenants whose status is ``active`` or ``past_due`` (not deleted).
        active_users: tenants that sent a message in the last ``ACTIVE_WINDOW_HOURS``.
        messages_per_minute: inbound messages per minute over ``RATE_WINDOW_MINUTES``.
        delivery_error_rate: failed / all replies started in the last ``ERROR_WINDOW_HOURS``
            (0.0 with none).
        llm_error_rate: LLM-gateway calls answered >= 400 / all, same window.
        spend_today_cents: LLM-gateway spend since 00:00 UTC, US cents.
        budget_today_cents: the paying tenants' daily budgets summed (``plan_budget_cents``).
        attention_open, attention_snoozed: unresolved items, and how many of them are snoozed.
        dead_letters: entries in every dead-letter stream (None: the bus is unreachable).
        last_deploy: ``{"version", "at"}`` of the last ``deploy`` audit row, or None.
        last_drift: ``{"ok", "at"}`` of the last ``drift.check`` audit row, or None.
    """

    machines: dict[str, int]
    paying: int
    active_users: int
    messages_per_minute: float
    delivery_error_rate: float
    llm_error_rate: float
    spend_today_cents: float
    budget_today_cents: int
    attention_open: int
    attention_snoozed: int
    dead_letters: int | None
    last_deploy: dict[str, Any] | None = None
    last_drift: dict[str, Any] | None = None


def _last(action: str, key: str) -> dict[str, Any] | None:
    entry = audit.latest(action)
    if entry is None:
        return None
    return {key: json.loads(entry.after or "{}").get(key), "at": entry.created_at}


def _rate(failed: int, total: int) -> float:
    return round(failed / total, 4) if total else 0.0


def _counts(query: Any) -> dict[str, int]:
    """``{key: count}`` of a ``SELECT key, COUNT(...) GROUP BY key``."""
    return {str(key): int(count) for key, count in query.tuples()}


def _total_and_failed(query: Any) -> tuple[int, int]:
    """The one ``(COUNT, SUM(failed))`` row of ``query`` (SUM is NULL over no rows)."""
    total, failed = query.tuples().get()
    return int(total or 0), int(failed or 0)


def overview(bus: Bus, plan_budget_cents: dict[str, int], now: datetime | None = None) -> Overview:
    """Compute the overview.

    Args:
        bus: where the dead letters are.
        plan_budget_cents: ``Settings.plan_budget_cents`` (plan -> cents per tenant per day).
        now: naive UTC (tests pass one).
    """
    now = now or utcnow()
    machines = _counts(Machine.select(Machine.state, fn.COUNT(Machine.id))
                       .group_by(Machine.state))
    paying_by_plan = _counts(Tenant.select(Tenant.plan, fn.COUNT(Tenant.id)).where(
        Tenant.status.in_([TenantStatus.ACTIVE, TenantStatus.PAST_DUE]) & Tenant.deleted_at.is_null())
        .group_by(Tenant.plan))
    active = (Message.select(fn.COUNT(Message.tenant.distinct()))
              .where((Message.direction == "in")
                     & (Message.created_at >= now - timedelta(hours=ACTIVE_WINDOW_HOURS)))
              .scalar())
    recent = (Message.select(fn.COUNT(Message.id))
              .where((Message.direction == "in")
                     & (Message.created_at >= now - timedelta(minutes=RATE_WINDOW_MINUTES)))
              .scalar())
    since = now - timedelta(hours=ERROR_WINDOW_HOURS)
    failed_deliveries = fn.SUM(Case(None, [(Delivery.state == DeliveryState.FAILED.value, 1)], 0))
    deliveries, delivery_failures = _total_and_failed(
        Delivery.select(fn.COUNT(Delivery.id), failed_deliveries).where(Delivery.created_at >= since))
    failed_calls = fn.SUM(Case(None, [(LlmCall.status >= 400, 1)], 0))
    midnight = datetime.combine(now.date(), time())
    calls, call_failures = _total_and_failed(
        LlmCall.select(fn.COUNT(LlmCall.id), failed_calls).where(LlmCall.created_at >= since))
    spend = (LlmCall.select(fn.SUM(LlmCall.cost_cents))
             .where(LlmCall.created_at >= midnight).scalar())
    unresolved = AttentionItem.resolved_at.is_null()
    attention_open = AttentionItem.select().where(unresolved).count()
    snoozed = AttentionItem.select().where(unresolved & (AttentionItem.snoozed_until > now)).count()
    try:
        dead: int | None = sum(ops_dead_letters.counts(bus).values())
    except WireError:
        dead = None
    return Overview(
        machines=machines, paying=sum(paying_by_plan.values()), active_users=active or 0,
        messages_per_minute=round((recent or 0) / RATE_WINDOW_MINUTES, 2),
        delivery_error_rate=_rate(delivery_failures, deliveries),
        llm_error_rate=_rate(call_failures, calls), spend_today_cents=round(spend or 0.0, 2),
        budget_today_cents=sum(plan_budget_cents.get(plan, 0) * count
                               for plan, count in paying_by_plan.items()),
        attention_open=attention_open, attention_snoozed=snoozed, dead_letters=dead,
        last_deploy=_last("deploy", "version"), last_drift=_last("drift.check", "ok"))
