"""What every tenant's agent is told: the control plane's agent settings, per plan.

``base_agent_env(settings)`` is the plan-independent environment (``Runtime.agent_env``);
``agent_env_for(base, plan)`` turns it into one plan's environment by resolving the plan's
daily LLM budget.  Provisioning calls the latter where the plan is known, before it adds the
tenant id, agent token and the tenant's own bus URL.  Variable names are the agent's contract
(``agent/config.py``).

Budget defaults (``DEFAULT_PLAN_BUDGET_CENTS``), against the plan prices in DESIGN.md
("Plans and sizes": Light $29/month, Heavy $79/month): the budget caps the worst case, a user
who exhausts it every day.  Light 50 cents/day is at most about $15.20 in a 30.4-day month,
~52 % of $29; Heavy 150 cents/day is at most about $45.60, ~58 % of $79.  What remains covers
the VM (cx23/cx33, a few euros a month), Stripe's fee (2.9 % + 30 cents per charge) and a
margin, so no plan can lose money on LLM use.  At Claude Haiku 4.5 prices ($1/$5 per MTok,
``wire/pricing.py``) a turn with ~8k tokens of context and a 500-token reply costs about
1 cent, so Light allows ~50 such turns a day and Heavy ~150.  The agent's own default (100)
would let a Light user cost more than they pay.
"""

from __future__ import annotations

from collections.abc import Mapping

from control.errors import ConfigError

PLAN_BUDGETS_VAR = "HERMES_PLAN_BUDGET_CENTS"
"""Control-only entry of the base environment carrying ``plan=cents,...``; never reaches an
agent (``agent_env_for`` replaces it with the plan's ``HERMES_DAILY_BUDGET_CENTS``)."""

DEFAULT_PLAN_BUDGET_CENTS: dict[str, int] = {"light": 50, "heavy": 150}
"""Plan -> paid LLM budget per tenant per UTC day, US cents (see the module docstring)."""


def plan_budget_cents(budgets: Mapping[str, int], plan: str) -> int:
    """Return ``plan``'s daily LLM budget in US cents.

    Raises:
        ConfigError: ``budgets`` has no entry for ``plan``.
    """
    try:
        return budgets[plan]
    except KeyError:
        raise ConfigError(f"no daily LLM budget for plan {plan!r} "
                          f"(HERMES_PLAN_BUDGET_CENTS has {sorted(budgets)})") from None


def base_agent_env(settings) -> dict[str, str]:
    """The environment every agent gets, whatever its plan.

    Args:
        settings: ``control.settings.Settings``.

    Returns:
        ``settings.agent_env`` (LLM backend, model chain), the LLM gateway's URLs
        (``llm_gateway.agent_urls``: provisioning adds the tenant's token as their keys; no
        provider key is ever here), ``HERMES_BUS_URL`` (the
        control plane's: provisioning swaps in the tenant's own ACL user),
        ``HERMES_VISIBILITY_TIMEOUT`` (seconds), ``HERMES_CONTROL_URL``, ``HERMES_TZ``,
        ``HERMES_BUS_CA_FILE`` when a Redis CA is configured, and ``PLAN_BUDGETS_VAR``.
    """
    # deferred: control.settings imports this module; llm_gateway would add peewee to hermes --help
    from control.services import llm_gateway

    env = {
        **llm_gateway.agent_urls(settings),
        **settings.agent_env,
        "HERMES_BUS_URL": settings.bus_url,
        "HERMES_VISIBILITY_TIMEOUT": str(settings.visibility_timeout),
        "HERMES_CONTROL_URL": settings.agent_control_url,
        "HERMES_TZ": settings.default_tz,
        PLAN_BUDGETS_VAR: ",".join(f"{p}={c}" for p, c in settings.plan_budget_cents.items()),
    }
    if settings.bus_ca_file:
        env["HERMES_BUS_CA_FILE"] = settings.bus_ca_file
    return env


def agent_env_for(base: Mapping[str, str], plan: str) -> dict[str, str]:
    """Return the environment of an agent on ``plan``.

    Args:
        base: ``base_agent_env(settings)`` (``Runtime.agent_env()``).
        plan: ``light`` or ``heavy``.

    Returns:
        ``base`` without ``PLAN_BUDGETS_VAR``, with ``HERMES_DAILY_BUDGET_CENTS`` set to the
        plan's budget (cents, decimal string); plans ``base`` does not price get
        ``DEFAULT_PLAN_BUDGET_CENTS``.

    Raises:
        ConfigError: ``base`` carries no budget for ``plan``.
    """
    env = dict(base)
    raw = env.pop(PLAN_BUDGETS_VAR, "")
    budgets = dict(DEFAULT_PLAN_BUDGET_CENTS)
    for pair in filter(None, raw.split(",")):
        name, _, cents = pair.partition("=")
        budgets[name] = int(cents)
    env["HERMES_DAILY_BUDGET_CENTS"] = str(plan_budget_cents(budgets, plan))
    return env
