"""Billing: turn verified Stripe events into tenants, subscriptions and provisioning requests.

Stripe does not guarantee event order (https://docs.stripe.com/webhooks#event-ordering), so
``checkout.session.completed`` and ``customer.subscription.created`` are accepted in either
order; a machine is requested once both a customer email and a paid plan are known.  No Stripe
API call is made on this path: everything comes from the event payloads.  Both the 2023
object shapes and the current ones (period fields moved to subscription items) are read.

The tenant of a checkout is its ``client_reference_id`` (our tenant id, set by the web
checkout), else the Stripe customer, else the e-mail; a tenant that an earlier event created
from the customer id alone is merged into it.

Subscription lifecycle (issue #10, ``control.services.lifecycle`` does the work):
``invoice.payment_failed`` on a paid subscription makes it ``past_due`` (Stripe retries the
payment; the agent keeps working), ``invoice.paid`` or a subscription event with a paid status
makes it active again; when no subscription of a tenant is paid or past due any more
(``customer.subscription.deleted``) the tenant is ``canceled`` and its grace period starts.

Ordering rule (Stripe: "Stripe doesn't guarantee the delivery of events in the order that
they're generated", https://docs.stripe.com/webhooks#event-ordering): every subscription
status change is stamped with its event's ``created`` time (``Subscription.status_at``), and
an event created before the stamp changes neither status nor plan (equal times apply, so the
later delivery wins a tie); and a ``canceled`` or ``incomplete_expired`` subscription is never
moved to another status, because Stripe never does (both are terminal,
https://docs.stripe.com/api/subscriptions/object#subscription_object-status).  So a late
``customer.subscription.updated`` (``active``) cannot resurrect a deleted subscription, and a
late ``invoice.payment_failed`` cannot undo a newer ``invoice.paid``.  Duplicates are dropped
on the event id (``WebhookEvent``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeGuard

import stripe

from control.db import write_transaction
from control.errors import BadRequest, SignatureError
from control.models import (
    Account,
    Machine,
    Subscription,
    SubscriptionStatus,
    Tenant,
    TenantStatus,
    WebhookEvent,
    utcnow,
)
from control.providers.base import PLANS
from control.services import lifecycle
from control.services.attention import raise_attention
from control.services.notices import Send

log = logging.getLogger(__name__)

# Subscription statuses that mean "paid": https://docs.stripe.com/api/subscriptions/object#subscription_object-status
PAID_STATUSES = frozenset({SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING})
# A renewal failed and Stripe is retrying (past_due), or gave up and left the subscription
# open without payment (unpaid, per the account's retry settings): the tenant is past due.
UNPAID_STATUSES = frozenset({SubscriptionStatus.PAST_DUE, SubscriptionStatus.UNPAID})
# Statuses Stripe never leaves (same reference).
TERMINAL_STATUSES = frozenset({SubscriptionStatus.CANCELED, SubscriptionStatus.INCOMPLETE_EXPIRED})
# Checkout Session payment_status values that mean the customer has paid.
PAID_CHECKOUT = frozenset({"paid", "no_payment_required"})
# Stripe object ids are at most 255 characters (https://docs.stripe.com/upgrades, "object IDs");
# every string stored from an event must also fit the 255-character columns.
MAX_TEXT = 255
# Unix seconds up to 9999-12-31, the last instant ``datetime`` can hold.
MAX_TIMESTAMP = 253402300799


def verify_signature(payload: bytes, header: str, secret: str, tolerance: int) -> None:
    """Verify a ``Stripe-Signature`` header over the raw body (https://docs.stripe.com/webhooks#verify-events).

    Args:
        payload: the request body exactly as received (bytes).
        header: the ``Stripe-Signature`` header value ("" when absent).
        secret: the endpoint's signing secret (``whsec_...``).
        tolerance: seconds a signature's timestamp may lag behind now.

    Raises:
        SignatureError: the header is missing, malformed, non-ASCII, stale or does not match.
        BadRequest: the body is not UTF-8, which no Stripe event is (RFC 8259 section 8.1).
    """
    # stripe's verifier compares the header's signatures as str with hmac.compare_digest,
    # which raises TypeError on non-ASCII text, and decodes the body as UTF-8 itself; both
    # inputs are screened here so they end as a rejection, never as an exception.
    if not header.isascii():
        raise SignatureError("Stripe signature verification failed: header is not ASCII")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8") from exc
    try:
        stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
    except stripe.SignatureVerificationError as exc:
        raise SignatureError(f"Stripe signature verification failed: {exc.user_message or exc}") from exc


# The fields each handler reads, with the JSON types the Stripe API reference gives them
# (https://docs.stripe.com/api/checkout/sessions/object, .../subscriptions/object,
# .../invoices/object). Webhook
# payloads are never expanded except where the reference says "expandable" and we accept it.
_TEXT, _OBJECT, _LIST, _TIME = "text", "object", "list", "timestamp"
_SHAPES: dict[str, dict[tuple[str, ...], Any]] = {
    "checkout.session": {
        ("mode",): _TEXT, ("customer",): _TEXT, ("customer_email",): _TEXT,
        ("customer_details",): _OBJECT, ("customer_details", "email"): _TEXT,
        ("subscription",): (_TEXT, _OBJECT), ("subscription", "id"): _TEXT,
        ("metadata",): _OBJECT, ("metadata", "plan"): _TEXT, ("payment_status",): _TEXT,
        ("client_reference_id",): _TEXT,
    },
    # https://docs.stripe.com/api/invoices/object: ``subscription`` until 2025, then
    # ``parent.subscription_details.subscription``; both are read.
    "invoice": {
        ("customer",): (_TEXT, _OBJECT), ("customer", "id"): _TEXT,
        ("subscription",): (_TEXT, _OBJECT), ("subscription", "id"): _TEXT,
        ("parent",): _OBJECT, ("parent", "subscription_details"): _OBJECT,
        ("parent", "subscription_details", "subscription"): (_TEXT, _OBJECT),
        ("parent", "subscription_details", "subscription", "id"): _TEXT,
        ("next_payment_attempt",): _TIME,
    },
    "subscription": {
        ("id",): _TEXT, ("customer",): (_TEXT, _OBJECT), ("customer", "id"): _TEXT,
        ("status",): _TEXT, ("metadata",): _OBJECT, ("metadata", "plan"): _TEXT,
        ("current_period_end",): _TIME, ("items",): _OBJECT, ("items", "data"): _LIST,
    },
    "subscription_item": {
        ("current_period_end",): _TIME, ("price",): _OBJECT, ("plan",): _OBJECT,
        ("price", "id"): _TEXT, ("price", "lookup_key"): _TEXT, ("price", "metadata"): _OBJECT,
        ("price", "metadata", "plan"): _TEXT, ("plan", "id"): _TEXT, ("plan", "lookup_key"): _TEXT,
        ("plan", "metadata"): _OBJECT, ("plan", "metadata", "plan"): _TEXT,
    },
}


def check_object(event_type: str, obj: dict) -> None:
    """Check the types of the fields a handled event's ``data.object`` is read for.

    Every field may be absent or null; when present it must have its documented type, and
    strings must be at most ``MAX_TEXT`` characters without NUL (PostgreSQL cannot store it).

    Raises:
        BadRequest: naming the first field of the wrong type.
    """
    kind = ("checkout.session" if event_type.startswith("checkout.session.")
            else "invoice" if event_type.startswith("invoice.") else "subscription")
    _check_shape(obj, _SHAPES[kind], kind)
    if kind == "subscription":
        items = (obj.get("items") or {}).get("data") or []
        for item in items[:1]:
            if not isinstance(item, dict):
                raise BadRequest("subscription.items.data[0] must be an object")
            _check_shape(item, _SHAPES["subscription_item"], "subscription.items.data[0]")


def _check_shape(obj: dict, shape: dict, name: str) -> None:
    for path, kinds in shape.items():
        value: Any = obj
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        allowed = kinds if isinstance(kinds, tuple) else (kinds,)
        if not any(_has_kind(value, kind) for kind in allowed):
            raise BadRequest(f"{name}.{'.'.join(path)} must be {' or '.join(allowed)}")


def _has_kind(value, kind: str) -> bool:
    if kind == _TEXT:
        return _is_short_text(value)
    if kind == _TIME:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP
    return isinstance(value, dict if kind == _OBJECT else list)


def _is_short_text(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) <= MAX_TEXT and "\x00" not in value


@dataclass(frozen=True)
class _Context:
    """What a handler needs besides the object: the fallback price map and the event's time."""

    price_plans: dict[str, str]
    at: datetime | None


def handle_event(event: dict, price_plans: dict[str, str],
                 request_machine: Callable[[Tenant, str], object],
                 release_machine: Callable[[Tenant], object] | None = None, *,
                 grace_days: int = 7, billing_url: str = "/billing",
                 send_notice: Send | None = None) -> str:
    """Apply one verified Stripe event; idempotent on the event id, safe in any order.

    Args:
        event: the event as JSON-decoded dict (``id``, ``type``, ``created``, ``data.object``).
        price_plans: fallback ``{price_id: plan}`` map (settings ``STRIPE_PRICE_PLANS``).
        request_machine: called with ``(tenant, plan)`` when the tenant should have a running
            machine (a new one, or its paused one resumed); it must be idempotent itself
            (``provisioning.request_machine``).
        release_machine: called with the tenant when its last subscription ended and its grace
            period began (``lifecycle.begin_grace``): pauses the machine; idempotent too.
        grace_days: days a canceled tenant's data is kept on its paused machine
            (``HERMES_GRACE_DAYS``).
        billing_url: the page where a user pays or resubscribes, for the past-due notice.
        send_notice: the ``send_notice`` task, telling the tenant's linked chats of a failed
            payment (``notices.tell``); None: only the e-mail and the web chat are told.

    Returns:
        ``duplicate``, ``ignored`` or ``processed``.

    Raises:
        BadRequest: the event lacks an id, a type or a data object, its ``created`` is not a
            Unix time, or a field the handler reads has the wrong type (``check_object``).
    """
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not _is_short_text(event_id) or not _is_short_text(event_type) or not isinstance(obj, dict):
        raise BadRequest("Stripe event needs id, type and data.object")
    created = event.get("created")
    if created is not None and not _has_kind(created, _TIME):
        raise BadRequest("Stripe event created must be a Unix time")
    handler = HANDLERS.get(event_type)
    if handler is not None:
        check_object(event_type, obj)
    at = datetime.fromtimestamp(created, UTC).replace(tzinfo=None) if created is not None else None
    with write_transaction():
        inserted = (WebhookEvent.insert(provider="stripe", event_id=event_id, event_type=event_type)
                    .on_conflict_ignore().as_rowcount().execute())
        if not inserted:
            return "duplicate"
        if handler is None:
            return "ignored"
        tenant = handler(obj, _Context(price_plans, at))
        if tenant is None or tenant.deleted_at is not None:
            # A deleted account keeps its Stripe ids only so that late events land here.
            return "processed"
        plan = _ready_plan(tenant)
        ended = plan is None and _standing(tenant, grace_days, billing_url, obj,
                                           send_notice or _no_chats)
    if ended and release_machine is not None:
        release_machine(tenant)
    if plan is not None:
        request_machine(tenant, plan)
    return "processed"


def _no_chats(channel: str, identity: str, text: str) -> None:
    """A ``notices.Send`` that tells no chat (``handle_event`` called without ``send_notice``)."""


def _standing(tenant: Tenant, grace_days: int, billing_url: str, obj: dict, send: Send) -> bool:
    """Move a tenant without a paid subscription to ``past_due`` or ``canceled``.

    Returns True when the tenant was canceled just now (its grace period starts).
    """
    statuses = {s.status for s in Subscription.select(Subscription.status)
                .where(Subscription.tenant == tenant)}
    if statuses & UNPAID_STATUSES:
        retry = obj.get("next_payment_attempt") if obj.get("object") == "invoice" else None
        lifecycle.mark_past_due(tenant, billing_url, send, retry_at=(
            datetime.fromtimestamp(retry, UTC).replace(tzinfo=None) if retry else None))
        return False
    if statuses and statuses <= TERMINAL_STATUSES and tenant.status in (TenantStatus.ACTIVE, TenantStatus.PAST_DUE):
        lifecycle.begin_grace(tenant, grace_days)
        return True
    return False


def _set_status(sub: Subscription, status: str | None, at: datetime | None) -> bool:
    """Apply ``status`` to ``sub`` when the ordering rule allows it (module docstring).

    Returns True when ``sub``'s status and plan may be changed by this event.
    """
    if at is not None and sub.status_at is not None and at < sub.status_at:
        return False
    if sub.status in TERMINAL_STATUSES and status != sub.status:
        return False
    if status:
        sub.status = status
    sub.status_at = at or sub.status_at
    return True


def _on_checkout_completed(session: dict, ctx: _Context) -> Tenant | None:
    if session.get("mode") not in (None, "subscription"):
        return None
    email = session.get("customer_email") or (session.get("customer_details") or {}).get("email")
    tenant = _tenant_for(session.get("customer"), email, session.get("client_reference_id"))
    sub_id = session.get("subscription")
    if isinstance(sub_id, dict):
        sub_id = sub_id.get("id")
    if sub_id:
        sub, _ = Subscription.get_or_create(stripe_subscription_id=sub_id,
                                            defaults={"stripe_customer_id": session.get("customer")})
        sub.tenant = tenant
        plan = (session.get("metadata") or {}).get("plan")
        if plan in PLANS and sub.plan is None:
            sub.plan = plan
        # The session only implies the subscription's status: it never stamps status_at, so
        # the subscription's own events, whenever they arrive, still apply.
        if (session.get("payment_status") in PAID_CHECKOUT and sub.status not in PAID_STATUSES
                and sub.status not in TERMINAL_STATUSES and sub.status_at is None):
            sub.status = SubscriptionStatus.ACTIVE
        sub.updated_at = utcnow()
        sub.save()
    return tenant


def _on_subscription_event(sub_obj: dict, ctx: _Context) -> Tenant | None:
    customer = sub_obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    sub_id = sub_obj.get("id")
    if not sub_id:
        raise BadRequest("subscription object without id")
    tenant = _tenant_for(customer, None)
    sub, _ = Subscription.get_or_create(stripe_subscription_id=sub_id,
                                        defaults={"stripe_customer_id": customer})
    plan, price_id = plan_of_subscription(sub_obj, ctx.price_plans)
    sub.tenant = tenant
    sub.stripe_customer_id = customer
    if _set_status(sub, sub_obj.get("status"), ctx.at) or sub.plan is None:
        sub.price_id = price_id
        sub.plan = plan or sub.plan
        sub.current_period_end = _period_end(sub_obj)
    sub.updated_at = utcnow()
    sub.save()
    if sub.plan is None:
        raise_attention("unknown_plan", sub_id,
                        f"subscription {sub_id} (customer {customer}) has price {price_id!r} "
                        "with no lookup_key/metadata.plan and no STRIPE_PRICE_PLANS entry")
    return tenant


def _on_invoice(invoice: dict, ctx: _Context, paid: bool) -> Tenant | None:
    """``invoice.paid``: a past-due (or first, incomplete) subscription is active again;
    ``invoice.payment_failed``: a paid subscription is past due (Stripe retries it)."""
    details = (invoice.get("parent") or {}).get("subscription_details") or {}
    sub_id = invoice.get("subscription") or details.get("subscription")
    if isinstance(sub_id, dict):
        sub_id = sub_id.get("id")
    sub = Subscription.get_or_none(Subscription.stripe_subscription_id == sub_id) if sub_id else None
    if sub is None:
        # A one-off invoice, or one for a subscription whose events have not arrived yet:
        # those events carry the status themselves.
        return None
    # A failed first payment leaves the subscription incomplete (no service was ever paid);
    # a paid one activates it.
    before = UNPAID_STATUSES | {SubscriptionStatus.INCOMPLETE} if paid else PAID_STATUSES
    status = SubscriptionStatus.ACTIVE if paid else SubscriptionStatus.PAST_DUE
    if sub.status in before and _set_status(sub, status, ctx.at):
        sub.updated_at = utcnow()
        sub.save()
    return sub.tenant


def _on_invoice_paid(invoice: dict, ctx: _Context) -> Tenant | None:
    return _on_invoice(invoice, ctx, paid=True)


def _on_invoice_failed(invoice: dict, ctx: _Context) -> Tenant | None:
    return _on_invoice(invoice, ctx, paid=False)


def plan_of_subscription(sub_obj: dict, price_plans: dict[str, str]) -> tuple[str | None, str | None]:
    """Return ``(plan, price_id)`` of a subscription object.

    The plan is the first item's price ``lookup_key`` or ``metadata.plan`` when that is
    ``light``/``heavy``, else the subscription's own ``metadata.plan``, else
    ``price_plans[price_id]``; ``None`` when nothing matches (issue #2).
    """
    items = ((sub_obj.get("items") or {}).get("data")) or []
    price = (items[0].get("price") or items[0].get("plan") or {}) if items else {}
    price_id = price.get("id")
    candidates = [price.get("lookup_key"), (price.get("metadata") or {}).get("plan"),
                  (sub_obj.get("metadata") or {}).get("plan"), price_plans.get(price_id or "")]
    return next((c for c in candidates if c in PLANS), None), price_id


def _period_end(sub_obj: dict) -> datetime | None:
    end = sub_obj.get("current_period_end")
    if end is None:
        items = ((sub_obj.get("items") or {}).get("data")) or [{}]
        end = items[0].get("current_period_end")
    if not isinstance(end, int):
        return None
    return datetime.fromtimestamp(end, UTC).replace(tzinfo=None)


def _tenant_for(customer_id: str | None, email: str | None, reference: str | None = None) -> Tenant:
    """Find (or create) the tenant an event is about.

    Candidates in order: ``reference`` (a checkout's ``client_reference_id``: our tenant id),
    the Stripe customer, the e-mail.  The first that is more than a placeholder wins; a
    placeholder (a tenant an earlier event made from a customer id alone: no e-mail, account
    or machine) is merged into it, so the order of Stripe's events does not matter.
    """
    by_ref = (Tenant.get_or_none((Tenant.id == int(reference)) & Tenant.deleted_at.is_null())
              if reference and reference.isdigit() and len(reference) <= 18 else None)
    by_customer = Tenant.get_or_none(Tenant.stripe_customer_id == customer_id) if customer_id else None
    by_email = Tenant.get_or_none(Tenant.email == email) if email else None
    found = [t for t in (by_ref, by_customer, by_email) if t is not None]
    tenant = next((t for t in found if not _is_placeholder(t)), found[0] if found else None)
    if tenant is None:
        return Tenant.create(stripe_customer_id=customer_id, email=email)
    for other in {t.id: t for t in found if t.id != tenant.id}.values():
        if _is_placeholder(other):
            _merge_placeholder(other, into=tenant)
    changed = False
    if customer_id and tenant.stripe_customer_id is None and not Tenant.select().where(
            Tenant.stripe_customer_id == customer_id).exists():
        tenant.stripe_customer_id, changed = customer_id, True
    if email and tenant.email is None and not Tenant.select().where(Tenant.email == email).exists():
        tenant.email, changed = email, True
    if changed:
        tenant.updated_at = utcnow()
        tenant.save()
    return tenant


def _is_placeholder(tenant: Tenant) -> bool:
    return (tenant.email is None and tenant.deleted_at is None
            and not Account.select().where(Account.tenant == tenant).exists()
            and not Machine.select().where(Machine.tenant == tenant).exists())


def _merge_placeholder(placeholder: Tenant, into: Tenant) -> None:
    """Move a placeholder tenant's subscriptions and customer id to ``into``; delete it."""
    Subscription.update(tenant=into).where(Subscription.tenant == placeholder).execute()
    customer = placeholder.stripe_customer_id
    placeholder.delete_instance()
    if customer and into.stripe_customer_id is None:
        into.stripe_customer_id, into.updated_at = customer, utcnow()
        into.save()


def _ready_plan(tenant: Tenant) -> str | None:
    """Return the plan to provision when the tenant has an email and a paid, known plan.

    A subscription counts when it is the tenant's or its Stripe customer's.  The customer
    clause is left out for a tenant without a customer id: peewee turns ``== None`` into
    ``IS NULL``, which would hand the tenant every paid subscription that lacks one too.
    """
    if not tenant.email:
        return None
    mine = Subscription.tenant == tenant
    if tenant.stripe_customer_id:
        mine |= Subscription.stripe_customer_id == tenant.stripe_customer_id
    subs = Subscription.select().where(
        mine & Subscription.status.in_(PAID_STATUSES) & Subscription.plan.is_null(False))
    sub = subs.first()
    if sub is None:
        return None
    if sub.tenant_id != tenant.id:
        sub.tenant = tenant
        sub.save()
    if tenant.plan != sub.plan or tenant.status != TenantStatus.ACTIVE:
        lifecycle.reactivate(tenant)
        tenant.plan, tenant.status, tenant.updated_at = sub.plan, TenantStatus.ACTIVE, utcnow()
        tenant.save()
    return sub.plan


HANDLERS: dict[str, Callable[[dict, _Context], Tenant | None]] = {
    "checkout.session.completed": _on_checkout_completed,
    "customer.subscription.created": _on_subscription_event,
    "customer.subscription.updated": _on_subscription_event,
    "customer.subscription.deleted": _on_subscription_event,
    "invoice.paid": _on_invoice_paid,
    "invoice.payment_failed": _on_invoice_failed,
}
