"""A tenant's LLM spend anomaly, as a Prometheus gauge the operator is alerted on (issue 23).

``hermes_llm_tenant_hourly_spend_ratio{plan, bucket}``: the largest share of the plan's daily
budget that one tenant spent through the LLM gateway (``LlmCall`` rows) in the last hour, over
the tenants of that plan whose id falls in ``bucket`` (``tenant_id % SPEND_BUCKETS``).  A user
spreads a day's budget over the day; a runaway loop (the 810-call heartbeat loops peers have
seen) burns half of it within an hour, which ``HermesTenantSpendAnomaly`` pages on
(``dashboards/alerts/hermes.rules.yml``, runbook ``runbooks/tenant-spend-anomaly.md``).
Buckets keep the series count fixed (plans x ``SPEND_BUCKETS``) however many tenants there
are; the runbook finds the tenant from its bucket.  Read from the database at scrape time, so
every gunicorn worker reports the same values.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from peewee import fn
from prometheus_client.core import GaugeMetricFamily

from control.models import LlmCall, Tenant, utcnow

SPEND_BUCKETS = 16
"""Tenant buckets per plan (``tenant_id % SPEND_BUCKETS``)."""
WINDOW = timedelta(hours=1)
"""The spend window the ratio is taken over."""


def hourly_spend_ratios(budgets: dict[str, int],
                        now: datetime | None = None) -> dict[tuple[str, int], float]:
    """The gauge's values: ``{(plan, bucket): ratio}`` for every plan with a budget.

    Args:
        budgets: ``settings.plan_budget_cents`` ({plan: US cents per UTC day}; plans with 0
            have no budget and no series).
        now: naive UTC; default now.

    Returns:
        Every ``(plan, bucket)`` pair, 0.0 where no tenant spent.
    """
    since = (now or utcnow()) - WINDOW
    ratios = {(plan, bucket): 0.0 for plan, cents in budgets.items() if cents
              for bucket in range(SPEND_BUCKETS)}
    spent = (LlmCall.select(LlmCall.tenant, Tenant.plan, fn.SUM(LlmCall.cost_cents))
             .join(Tenant).where(LlmCall.created_at >= since)
             .group_by(LlmCall.tenant, Tenant.plan).tuples().iterator())
    for tenant_id, plan, cents in spent:
        key = (plan, tenant_id % SPEND_BUCKETS)
        if key in ratios:
            ratios[key] = max(ratios[key], float(cents or 0.0) / budgets[plan])
    return ratios


class SpendCollector:
    """Prometheus collector of ``hermes_llm_tenant_hourly_spend_ratio`` (module docstring).

    Args:
        runtime: the ``control.runtime.Runtime`` (database, ``settings.plan_budget_cents``).
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the gauge, one series per plan and bucket."""
        gauge = GaugeMetricFamily(
            "hermes_llm_tenant_hourly_spend_ratio",
            "Largest share of the daily budget one tenant of the plan and bucket spent in the "
            "last hour", labels=["plan", "bucket"])
        with self.runtime.db.connection_context():
            ratios = hourly_spend_ratios(self.runtime.settings.plan_budget_cents)
        for (plan, bucket), ratio in sorted(ratios.items()):
            gauge.add_metric([plan, str(bucket)], ratio)
        yield gauge
