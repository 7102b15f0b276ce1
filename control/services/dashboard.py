"""The dashboard's overview of one tenant: machine state in words, plan, usage this billing
period against the plan's budget, and the account banner (issue #10).

Periods and days are UTC.  The billing period starts one calendar month before the latest
subscription's ``current_period_end`` (Stripe bills monthly subscriptions on the same day of
each month: https://docs.stripe.com/billing/subscriptions/billing-cycle), else at the start of
the current calendar month.  The budget is ``settings.plan_budget_cents`` (cents per UTC day,
the same figure the LLM gateway enforces).  Tokens and spend are the gateway's own metering
(``LlmCall`` rows, ``control.services.llm_gateway``), not what an agent reports about itself.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime

from peewee import fn

from control.errors import NotFound
from control.models import (
    ChatIdentity,
    LlmCall,
    Machine,
    MachineState,
    Message,
    Subscription,
    Tenant,
    TenantStatus,
    Usage,
    utcnow,
)
from control.services.agent_settings import DEFAULT_PLAN_BUDGET_CENTS

MACHINE_WORDING: dict[str, str] = {
    MachineState.REQUESTED: "Queued: your server will be created in a moment.",
    MachineState.PROVISIONING: "Creating your server.",
    MachineState.BOOTING: "Your server is up; your agent is starting.",
    MachineState.READY: "Ready: your agent is running and answering.",
    MachineState.UNHEALTHY: "Not responding: your agent missed its heartbeats; we are watching it.",
    MachineState.FAILED: "Could not be created; the operator has been told and will fix it.",
    MachineState.DEPROVISIONING: "Being shut down.",
    MachineState.DEPROVISIONED: "Shut down.",
}
"""What each ``MachineState`` means to a user, one sentence each."""

NO_MACHINE_WORDING = "No server yet: choose a plan to get your own agent."

PAST_DUE_BANNER = ("Payment failed - update your card in billing; your agent keeps working "
                   "while Stripe retries.")
ARCHIVED_BANNER = ("Your subscription ended and your agent was shut down; its memories, skills, "
                   "scheduled jobs and history are archived. Resubscribe to get them back.")
PAUSED_BANNER = ("Paused because your subscription ended; data kept until {until}; "
                 "resubscribe to continue.")


@dataclass(frozen=True)
class UsageSummary:
    """Usage of one tenant.

    Attributes:
        period_start: start of the billing period (naive UTC).
        messages_in, messages_out: conversation-log rows since ``period_start``.
        input_tokens, output_tokens: LLM tokens since ``period_start``.
        cost_cents: LLM cost since ``period_start`` (US cents).
        today_cents: LLM cost since 00:00 UTC today (US cents).
        today_by_model: ``((model, cents), ...)`` today's cost per model, dearest first.
        daily_budget_cents: the plan's daily budget (US cents), or None without a plan.
        today_by_goal: ``((goal number, cents), ...)`` today's cost of the agent's goals, as
            the agent reported its calls, dearest first (issue 23).
        today_by_job: ``((job id, cents), ...)`` the same for jobs.
    """

    period_start: datetime
    messages_in: int
    messages_out: int
    input_tokens: int
    output_tokens: int
    cost_cents: float
    today_cents: float
    today_by_model: tuple[tuple[str, float], ...]
    daily_budget_cents: int | None
    today_by_goal: tuple[tuple[int, float], ...] = ()
    today_by_job: tuple[tuple[str, float], ...] = ()

    @property
    def today_percent(self) -> int:
        """Today's spend as a whole percentage of the daily budget (0 without a budget; may exceed 100)."""
        if not self.daily_budget_cents:
            return 0
        return round(100 * self.today_cents / self.daily_budget_cents)


@dataclass(frozen=True)
class Overview:
    """What ``GET /dashboard`` shows.

    Attributes:
        machine_state: a ``MachineState`` value, or None when the tenant has no machine.
        machine_wording: the state in words (``MACHINE_WORDING``).
        plan: ``light`` | ``heavy`` | None.
        usage: the ``UsageSummary``.
        banner: the account banner text, or None.
    """

    machine_state: str | None
    machine_wording: str
    plan: str | None
    usage: UsageSummary
    banner: str | None


def overview(tenant: Tenant, plan_budgets: dict[str, int], now: datetime | None = None) -> Overview:
    """Return the dashboard overview of ``tenant``.

    Args:
        tenant: the signed-in user's tenant.
        plan_budgets: ``settings.plan_budget_cents`` ({plan: cents per UTC day}).
        now: naive UTC; default now.
    """
    machine = Machine.get_or_none(Machine.tenant == tenant)
    state = machine.state if machine is not None else None
    wording = MACHINE_WORDING.get(state, NO_MACHINE_WORDING) if state else NO_MACHINE_WORDING
    return Overview(state, wording, tenant.plan, usage_summary(tenant, plan_budgets, now),
                    banner(tenant))


def banner(tenant: Tenant) -> str | None:
    """Return the account banner: paused (subscription ended) or past due, else None."""
    if tenant.status == TenantStatus.CANCELED and tenant.archived_at is not None:
        return ARCHIVED_BANNER
    if tenant.status == TenantStatus.CANCELED:
        until = f"{tenant.grace_until:%Y-%m-%d}" if tenant.grace_until else "the end of the grace period"
        return PAUSED_BANNER.format(until=until)
    if tenant.status == TenantStatus.PAST_DUE:
        return PAST_DUE_BANNER
    return None


def period_start(tenant: Tenant, now: datetime | None = None) -> datetime:
    """Return the start of ``tenant``'s current billing period (naive UTC; see the module doc)."""
    now = now or utcnow()
    latest = (Subscription.select(Subscription.current_period_end)
              .where((Subscription.tenant == tenant) & Subscription.current_period_end.is_null(False))
              .order_by(Subscription.current_period_end.desc()).first())
    if latest is not None:
        start = _month_before(latest.current_period_end)
        if start <= now:
            return start
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def usage_summary(tenant: Tenant, plan_budgets: dict[str, int], now: datetime | None = None) -> UsageSummary:
    """Return ``tenant``'s messages, tokens and cost this period and today's spend.

    Args:
        tenant: the tenant.
        plan_budgets: {plan: cents per UTC day}; a plan it lacks gets
            ``DEFAULT_PLAN_BUDGET_CENTS`` (as the agent's environment does).
        now: naive UTC; default now.
    """
    now = now or utcnow()
    start = period_start(tenant, now)
    counts = dict(Message.select(Message.direction, fn.COUNT(Message.id))
                  .where((Message.tenant == tenant) & (Message.created_at >= start))
                  .group_by(Message.direction).tuples().iterator())
    tokens_in, tokens_out, cost = (LlmCall.select(fn.SUM(LlmCall.input_tokens),
                                                  fn.SUM(LlmCall.output_tokens),
                                                  fn.SUM(LlmCall.cost_cents))
                                   .where((LlmCall.tenant == tenant) & (LlmCall.created_at >= start))
                                   .scalar(as_tuple=True))
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    spend = fn.SUM(LlmCall.cost_cents)
    by_model = tuple((model, float(cents or 0.0)) for model, cents in (
        LlmCall.select(LlmCall.model, spend)
        .where((LlmCall.tenant == tenant) & (LlmCall.created_at >= midnight))
        .group_by(LlmCall.model).order_by(spend.desc(), LlmCall.model).tuples().iterator()))
    budgets = {**DEFAULT_PLAN_BUDGET_CENTS, **plan_budgets}
    return UsageSummary(period_start=start, messages_in=counts.get("in", 0),
                        messages_out=counts.get("out", 0), input_tokens=int(tokens_in or 0),
                        output_tokens=int(tokens_out or 0), cost_cents=float(cost or 0.0),
                        today_cents=sum(cents for _, cents in by_model), today_by_model=by_model,
                        daily_budget_cents=budgets.get(tenant.plan) if tenant.plan else None,
                        today_by_goal=_today_by(tenant, Usage.goal_id, midnight),
                        today_by_job=_today_by(tenant, Usage.job_id, midnight))


def _today_by(tenant: Tenant, column, midnight: datetime) -> tuple:
    """``((value of column, cents), ...)`` of ``tenant``'s ``Usage`` since ``midnight``, dearest
    first, rows without a value left out."""
    spend = fn.SUM(Usage.cost_cents)
    return tuple((key, float(cents or 0.0)) for key, cents in (
        Usage.select(column, spend)
        .where((Usage.tenant == tenant) & (Usage.created_at >= midnight) & column.is_null(False))
        .group_by(column).order_by(spend.desc(), column).tuples().iterator()))


def _month_before(moment: datetime) -> datetime:
    """Return ``moment`` one calendar month earlier, the day clamped to the month's length."""
    year, month = (moment.year, moment.month - 1) if moment.month > 1 else (moment.year - 1, 12)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)



def linked_chats(tenant: Tenant) -> list[ChatIdentity]:
    """Return the tenant's linked chats, oldest link first."""
    return list(ChatIdentity.select().where(ChatIdentity.tenant == tenant)
                .order_by(ChatIdentity.linked_at, ChatIdentity.id))


def unlink(tenant: Tenant, identity_id: int) -> ChatIdentity:
    """Unlink the chat ``identity_id`` of ``tenant``; the chat then reaches no agent.

    Returns:
        The removed row (for the confirmation message).

    Raises:
        NotFound: no such chat of this tenant (another tenant's chat is "not found" too).
    """
    identity = ChatIdentity.get_or_none((ChatIdentity.id == identity_id) & (ChatIdentity.tenant == tenant))
    if identity is None:
        raise NotFound("No such linked chat.")
    identity.delete_instance()
    return identity


def mask_chat_id(chat_id: str) -> str:
    """Return ``chat_id`` with all but its last 3 characters hidden (``•••123``)."""
    return "•••" + chat_id[-3:] if len(chat_id) > 3 else "•••"
