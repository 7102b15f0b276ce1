"""The tenants of mission control (issue 21): search, and one tenant's subscription, linked
channels, usage and spend, and recent deliveries with their outcome.

Reads only; every change to a tenant goes through the fleet actions (``ops_fleet``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from peewee import JOIN, fn

from control.errors import NotFound
from control.models import (
    ChatIdentity,
    Delivery,
    LlmCall,
    Machine,
    Message,
    Subscription,
    Tenant,
    utcnow,
)

#: Tenants a search lists at most, newest first; deliveries a tenant's page shows.
PAGE = 100
RECENT_DELIVERIES = 20


@dataclass(frozen=True)
class TenantRow:
    """One tenant in a search: id, e-mail ("" when none), status, plan, machine state ("" with
    no machine) and creation time (naive UTC)."""

    id: int
    email: str
    status: str
    plan: str
    machine_state: str
    created_at: datetime


@dataclass(frozen=True)
class TenantDetail:
    """One tenant's page.

    Attributes:
        row: the tenant as in a search.
        subscriptions: ``[{"id", "status", "plan", "current_period_end"}]``, newest first.
        chats: ``[{"channel", "chat", "linked_at"}]``; ``chat`` shows the last 4 characters of
            the platform's chat id only (support needs which chat, not the id).
        spend_today_cents, spend_week_cents: LLM-gateway spend since 00:00 UTC and over 7 days.
        calls_week, failed_calls_week: LLM-gateway calls over 7 days, and those answered >= 400.
        messages_week: ``{"in": n, "out": n}`` over 7 days.
        deliveries: the latest ``RECENT_DELIVERIES`` replies: ``Delivery`` rows.
    """

    row: TenantRow
    subscriptions: list[dict[str, Any]]
    chats: list[dict[str, Any]]
    spend_today_cents: float
    spend_week_cents: float
    calls_week: int
    failed_calls_week: int
    messages_week: dict[str, int]
    deliveries: list[Delivery]


def _row(tenant: Tenant, machine_state: str | None) -> TenantRow:
    return TenantRow(id=tenant.id, email=tenant.email or "", status=tenant.status,
                     plan=tenant.plan or "", machine_state=machine_state or "",
                     created_at=tenant.created_at)


def search(query: str = "") -> list[TenantRow]:
    """Tenants whose e-mail contains ``query`` (or the tenant with that id), newest first, at
    most ``PAGE``; every tenant when ``query`` is empty."""
    rows = (Tenant.select(Tenant, Machine.state.alias("machine_state"))
            .join(Machine, join_type=JOIN.LEFT_OUTER, on=(Machine.tenant == Tenant.id)))
    query = query.strip()
    if query:
        rows = rows.where(Tenant.email.contains(query)
                          | (Tenant.id == (int(query) if query.isdigit() else -1)))
    return [_row(t, getattr(t, "machine_state", None))
            for t in rows.order_by(Tenant.id.desc()).limit(PAGE).objects()]


def detail(tenant_id: int, now: datetime | None = None) -> TenantDetail:
    """Everything the tenant's page shows (see ``TenantDetail``).

    Raises:
        NotFound: no such tenant.
    """
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    if tenant is None:
        raise NotFound(f"no tenant {tenant_id}")
    now = now or utcnow()
    week = now - timedelta(days=7)
    machine = Machine.get_or_none(Machine.tenant == tenant_id)
    subscriptions = [{"id": s.stripe_subscription_id, "status": s.status, "plan": s.plan or "",
                      "current_period_end": s.current_period_end}
                     for s in Subscription.select().where(Subscription.tenant == tenant_id)
                     .order_by(Subscription.id.desc())]
    chats = [{"channel": c.channel, "chat": "…" + c.chat_id[-4:], "linked_at": c.linked_at}
             for c in ChatIdentity.select().where(ChatIdentity.tenant == tenant_id)
             .order_by(ChatIdentity.channel)]
    calls = LlmCall.select().where((LlmCall.tenant == tenant_id) & (LlmCall.created_at >= week))
    spend_week = calls.select(fn.COALESCE(fn.SUM(LlmCall.cost_cents), 0)).scalar()
    spend_today = (calls.select(fn.COALESCE(fn.SUM(LlmCall.cost_cents), 0))
                   .where(LlmCall.created_at >= datetime.combine(now.date(), time())).scalar())
    messages: dict[str, int] = dict(
        Message.select(Message.direction, fn.COUNT(Message.id))  # type: ignore[arg-type]
        .where((Message.tenant == tenant_id) & (Message.created_at >= week))
        .group_by(Message.direction).tuples())
    deliveries = list(Delivery.select().where(Delivery.tenant == tenant_id)
                      .order_by(Delivery.id.desc()).limit(RECENT_DELIVERIES))
    return TenantDetail(
        row=_row(tenant, machine.state if machine else None), subscriptions=subscriptions,
        chats=chats, spend_today_cents=round(float(spend_today or 0), 4),
        spend_week_cents=round(float(spend_week or 0), 4), calls_week=calls.count(),
        failed_calls_week=calls.where(LlmCall.status >= 400).count(),
        messages_week={"in": messages.get("in", 0), "out": messages.get("out", 0)},
        deliveries=deliveries)
