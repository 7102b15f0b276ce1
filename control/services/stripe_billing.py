"""Stripe API calls for the billing pages: Checkout, the customer portal, invoices, subscriptions.

One ``stripe.StripeClient`` per ``StripeBilling`` (no module-global ``stripe.api_key``), aimed at
``STRIPE_API_BASE`` when set (the local stand-in, ``standins/stripe_api.py``).  Every Stripe
failure becomes a ``PaymentProviderError`` (502) with a message a user can act on; the details go
to the log.  Webhooks are not handled here: ``control.services.billing`` applies them.
``period_usage`` adds up what the billing page shows against the plan for Stripe's period.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import urlsplit

import stripe
from peewee import fn
from stripe.params.checkout import SessionCreateParams

from control.errors import BadRequest, Conflict, NotFound, PaymentProviderError, ServiceUnavailable
from control.models import SubscriptionStatus, Tenant, Usage
from control.providers.base import PLANS
from control.services.agent_settings import DEFAULT_PLAN_BUDGET_CENTS
from control.services.billing import plan_of_subscription
from control.settings import Settings

log = logging.getLogger(__name__)

# Seconds one Stripe API call may take; the SDK's default (80 s) would hold a page that long.
# Stripe's p99 API latency is well under a second; 20 s leaves room for a slow network.
REQUEST_TIMEOUT = 20
# A double click on "Subscribe" reuses the first Checkout Session: the Idempotency-Key covers
# the request's parameters and this window (seconds).  Stripe keeps keys for 24 hours
# (https://docs.stripe.com/api/idempotent_requests); a session lives 24 hours, so a user who
# comes back after the window gets a fresh one.
CHECKOUT_IDEMPOTENCY_WINDOW = 600
# Subscription statuses (https://docs.stripe.com/api/subscriptions/object#subscription_object-status)
# of a customer who has a plan, and, with ``incomplete`` (a first payment still pending), those
# that may still bill: the ones account deletion cancels.
SUBSCRIBED_STATUSES = (SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE,
                       SubscriptionStatus.UNPAID, SubscriptionStatus.PAUSED)
LIVE_STATUSES = (*SUBSCRIBED_STATUSES, SubscriptionStatus.INCOMPLETE)
NOT_SET_UP = "billing is not set up on this server"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def is_local_stripe(settings: Settings) -> bool:
    """True when ``STRIPE_API_BASE`` points at this machine (the local Stripe stand-in)."""
    return bool(settings.stripe_api_base) and urlsplit(settings.stripe_api_base).hostname in LOCAL_HOSTS


def _when(ts: int | None) -> datetime | None:
    """Stripe's Unix seconds as a naive UTC datetime (the models' convention), or None."""
    return datetime.fromtimestamp(ts, UTC).replace(tzinfo=None) if isinstance(ts, int) else None


class StripeBilling:
    """The Stripe calls the billing pages make, for one control plane's settings.

    Args:
        settings: ``stripe_secret_key`` (required), ``stripe_api_base`` (optional),
            ``stripe_prices`` ({plan: price id}) and ``stripe_price_plans`` ({price id: plan}).

    Raises:
        ServiceUnavailable: ``STRIPE_SECRET_KEY`` is empty (code ``billing_not_configured``,
            message ``NOT_SET_UP``).
    """

    def __init__(self, settings: Settings):
        if not settings.stripe_secret_key:
            raise ServiceUnavailable(NOT_SET_UP, code="billing_not_configured")
        self.settings = settings
        self._client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": settings.stripe_api_base} if settings.stripe_api_base else None,
            http_client=stripe.new_default_http_client(timeout=REQUEST_TIMEOUT))
        self._price_plans = {**settings.stripe_price_plans,
                             **{price: plan for plan, price in settings.stripe_prices.items()}}

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Turn a Stripe failure while doing ``what`` into a ``PaymentProviderError``."""
        try:
            yield
        except stripe.APIConnectionError as exc:
            log.warning("Stripe unreachable while trying to %s: %s", what, exc)
            raise PaymentProviderError(f"Could not reach the payment provider to {what}; "
                                       "please try again in a minute.") from exc
        except stripe.AuthenticationError as exc:
            log.error("Stripe refused the API key while trying to %s: %s", what, exc)
            raise PaymentProviderError(f"The payment provider refused this server's API key, so "
                                       f"it cannot {what}; the operator must fix "
                                       "STRIPE_SECRET_KEY.") from exc
        except stripe.StripeError as exc:
            log.error("Stripe error while trying to %s: %s", what, exc)
            detail = exc.user_message or type(exc).__name__
            raise PaymentProviderError(f"The payment provider could not {what}: {detail}") from exc

    def checkout_url(self, tenant: Tenant, plan: str, success_url: str, cancel_url: str) -> str:
        """Create a subscription-mode Checkout Session and return its URL.

        ``client_reference_id`` is the tenant id (the webhook finds the tenant by it); the
        customer is the tenant's Stripe customer, or else Stripe creates one for its e-mail.
        ``metadata.plan`` is set on the session and, through ``subscription_data``, on the
        subscription.  Repeating the call with the same arguments within
        ``CHECKOUT_IDEMPOTENCY_WINDOW`` seconds returns the same session.

        Args:
            tenant: the paying tenant.
            plan: ``light`` or ``heavy``.
            success_url: where Stripe sends the browser after paying; may contain
                ``{CHECKOUT_SESSION_ID}``.
            cancel_url: where the "back" link leads.

        Raises:
            BadRequest: unknown plan.
            ServiceUnavailable: no price is configured for ``plan`` (``billing_not_configured``).
            PaymentProviderError: Stripe failed or refused.
        """
        if plan not in PLANS:
            raise BadRequest(f"unknown plan {plan!r}; choose one of {', '.join(PLANS)}")
        price = self.settings.stripe_prices.get(plan)
        if not price:
            raise ServiceUnavailable(f"{NOT_SET_UP} (no Stripe price for the {plan} plan)",
                                     code="billing_not_configured")
        metadata = {"plan": plan, "tenant_id": str(tenant.id)}
        params: SessionCreateParams = {"mode": "subscription", "line_items": [{"price": price, "quantity": 1}],
                        "client_reference_id": str(tenant.id), "success_url": success_url,
                        "cancel_url": cancel_url, "metadata": metadata,
                        "subscription_data": {"metadata": metadata}}
        if tenant.stripe_customer_id:
            params["customer"] = tenant.stripe_customer_id
        elif tenant.email:
            params["customer_email"] = tenant.email
        window = int(time.time()) // CHECKOUT_IDEMPOTENCY_WINDOW
        key = hashlib.sha256(repr((sorted(params.items()), window)).encode()).hexdigest()
        with self._calling("start the checkout"):
            session = self._client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": f"checkout-{key}"})
        if not session.url:  # set for every hosted (ui_mode "hosted") session, per Stripe's API
            raise PaymentProviderError("Stripe returned a checkout session without a URL")
        return session.url

    def checkout_session(self, tenant: Tenant, session_id: str) -> dict:
        """Return ``{"status", "payment_status", "plan"}`` of the tenant's Checkout Session.

        Raises:
            NotFound: no such session, or it belongs to another tenant (never told apart).
            PaymentProviderError: Stripe failed.
        """
        try:
            with self._calling("look up the checkout"):
                session = self._client.v1.checkout.sessions.retrieve(session_id)
        except PaymentProviderError as exc:
            if isinstance(exc.__cause__, stripe.InvalidRequestError) and exc.__cause__.http_status == 404:
                raise NotFound("no such checkout session") from None
            raise
        found = session.to_dict()
        if found.get("client_reference_id") != str(tenant.id):
            raise NotFound("no such checkout session")
        return {"status": found.get("status"), "payment_status": found.get("payment_status"),
                "plan": (found.get("metadata") or {}).get("plan")}

    def portal_url(self, tenant: Tenant, return_url: str) -> str:
        """Create a customer portal session; return its URL.

        Raises:
            Conflict: the tenant has no Stripe customer yet (never subscribed).
            PaymentProviderError: Stripe failed or refused.
        """
        if not tenant.stripe_customer_id:
            raise Conflict("there is no subscription to manage yet")
        with self._calling("open the billing portal"):
            portal = self._client.v1.billing_portal.sessions.create(
                params={"customer": tenant.stripe_customer_id, "return_url": return_url})
        return portal.url

    def invoices(self, tenant: Tenant, limit: int = 12) -> list[dict]:
        """Return the tenant's newest ``limit`` invoices, newest first.

        Returns:
            ``[{"number", "amount_paid" (cents), "currency", "status", "created" (naive UTC
            datetime), "hosted_invoice_url"}]``; ``[]`` without a Stripe customer.

        Raises:
            PaymentProviderError: Stripe failed.
        """
        if not tenant.stripe_customer_id:
            return []
        with self._calling("list your invoices"):
            page = self._client.v1.invoices.list(
                params={"customer": tenant.stripe_customer_id, "limit": limit})
        return [{"number": inv.number, "amount_paid": inv.amount_paid, "currency": inv.currency,
                 "status": inv.status, "created": _when(inv.created),
                 "hosted_invoice_url": inv.hosted_invoice_url} for inv in page.data]

    def subscription(self, tenant: Tenant) -> dict | None:
        """Return a summary of the tenant's current subscription, or None if it has none.

        The current one is the newest still billing (``LIVE_STATUSES``), else the newest.

        Returns:
            ``{"id", "plan", "status", "current_period_start", "current_period_end" (naive UTC
            datetimes or None), "cancel_at_period_end"}``.  Period fields come from the first
            item (API 2025-03-31 and later) or the subscription itself (older versions).

        Raises:
            PaymentProviderError: Stripe failed.
        """
        subs = self._subscriptions(tenant, "look up your subscription")
        if not subs:
            return None
        sub = next((s for s in subs if s["status"] in LIVE_STATUSES), subs[0])
        items = (sub.get("items") or {}).get("data") or [{}]
        plan, _price = plan_of_subscription(sub, self._price_plans)
        return {"id": sub["id"], "plan": plan, "status": sub["status"],
                "current_period_start": _when(items[0].get("current_period_start")
                                              or sub.get("current_period_start")),
                "current_period_end": _when(items[0].get("current_period_end")
                                            or sub.get("current_period_end")),
                "cancel_at_period_end": bool(sub.get("cancel_at_period_end"))}

    def cancel_subscriptions(self, tenant: Tenant) -> list[str]:
        """Cancel, at once, every subscription of the tenant that still bills.

        Customers are the tenant's own and those of its recorded subscriptions.

        Returns:
            The canceled subscription ids (``[]`` when there was none).

        Raises:
            PaymentProviderError: Stripe failed; subscriptions canceled before the failure stay
                canceled, so calling again finishes the job.
        """
        canceled = []
        for sub in self._subscriptions(tenant, "cancel your subscription"):
            if sub["status"] in LIVE_STATUSES:
                with self._calling("cancel your subscription"):
                    self._client.v1.subscriptions.cancel(sub["id"])
                canceled.append(sub["id"])
        return canceled

    def _subscriptions(self, tenant: Tenant, what: str) -> list[dict]:
        """Every subscription of the tenant's customers, newest first, as plain dicts."""
        customers = {tenant.stripe_customer_id} | {s.stripe_customer_id for s in tenant.subscriptions}
        found: list[dict] = []
        for customer in sorted(c for c in customers if c):
            with self._calling(what):
                page = self._client.v1.subscriptions.list(
                    params={"customer": customer, "status": "all", "limit": 100})
            found.extend(s.to_dict() for s in page.data)
        return sorted(found, key=lambda s: s.get("created") or 0, reverse=True)


def period_usage(tenant: Tenant, start: datetime, end: datetime, budgets: dict[str, int]) -> dict:
    """Return the tenant's LLM use from ``start`` against its plan's budget for the period.

    Args:
        tenant: the tenant (its ``plan`` picks the budget).
        start, end: the billing period (naive UTC), from Stripe's subscription.
        budgets: ``settings.plan_budget_cents`` ({plan: US cents per UTC day}); a plan it
            lacks gets ``DEFAULT_PLAN_BUDGET_CENTS``.

    Returns:
        ``{"cost_cents", "input_tokens", "output_tokens", "calls", "budget_cents", "percent"}``:
        sums of ``Usage`` rows since ``start``; the budget is the daily budget times the
        period's days (rounded up to whole days); ``percent`` is whole, capped at 100 for the
        meter (the cost itself is not capped).
    """
    cost, tokens_in, tokens_out, calls = (
        Usage.select(fn.SUM(Usage.cost_cents), fn.SUM(Usage.input_tokens),
                     fn.SUM(Usage.output_tokens), fn.COUNT(Usage.id))
        .where((Usage.tenant == tenant) & (Usage.created_at >= start)).scalar(as_tuple=True))
    days = max(1, -(-int((end - start).total_seconds()) // 86400))
    # Plans the setting leaves out get the default, as the agent's environment does.
    budget = {**DEFAULT_PLAN_BUDGET_CENTS, **budgets}.get(tenant.plan or "", 0) * days
    cost = float(cost or 0.0)
    return {"cost_cents": cost, "input_tokens": int(tokens_in or 0),
            "output_tokens": int(tokens_out or 0), "calls": int(calls or 0),
            "budget_cents": budget,
            "percent": min(100, round(100 * cost / budget)) if budget else 0}
