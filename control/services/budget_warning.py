"""The warning a user gets when today's LLM spend crosses 80 % of the plan's daily budget
(issue 23, "budgets a user sees").

The LLM gateway calls ``warn_if_crossed`` after metering each call.  The warning goes out the
way every other notice does (``control.services.notices.tell``: every linked chat, the web
chat and the e-mail, ``Notice.BUDGET_WARNING``), at most once per
tenant per UTC day: a ``BudgetWarning`` row, unique per tenant and day, is inserted first and
only the caller whose insert landed sends, so concurrent calls in several gunicorn workers
send one warning between them.
"""

from __future__ import annotations

import logging
from datetime import datetime

from control.models import BudgetWarning, Tenant, utcnow
from control.services.llm_gateway import spent_today_cents
from control.services.notices import Notice, Send, tell

log = logging.getLogger(__name__)

WARN_AT = 0.8
"""Share of the daily budget at which the user is warned (issue 23: "at 80 %")."""

def warn_if_crossed(tenant: Tenant, budgets: dict[str, int], notify: Send,
                    now: datetime | None = None) -> bool:
    """Warn ``tenant``'s linked chats once today's spend reaches ``WARN_AT`` of its budget.

    Args:
        tenant: the tenant whose gateway call was just metered.
        budgets: ``settings.plan_budget_cents`` ({plan: US cents per UTC day}; 0 or missing:
            no budget, no warning, as the gateway's own check).
        notify: the ``send_notice`` task (``notices.Send``).
        now: naive UTC (tests pass one); default now.

    Returns:
        True when this call sent today's warning (False: below the mark, no budget, or
        already warned today).
    """
    budget = budgets.get(str(tenant.plan), 0)
    if not budget:
        return False
    spent = spent_today_cents(tenant.id)
    if spent < WARN_AT * budget:
        return False
    day = (now or utcnow()).date()
    claimed = (BudgetWarning.insert(tenant=tenant.id, day=day, spent_cents=spent,
                                    sent_at=now or utcnow())
               .on_conflict_ignore().as_rowcount().execute())
    if not claimed:
        return False
    told = tell(tenant, Notice.BUDGET_WARNING, notify, percent=min(100, int(100 * spent / budget)),
                spent=spent / 100, budget=budget / 100)
    log.info("tenant %s reached %.0f %% of its daily LLM budget; %d place(s) told",
             tenant.id, 100 * spent / budget, told.count)
    return True
