"""Billing: turn verified Stripe events into tenants, subscriptions and provisioning requests.

Stripe does not guarantee event order (https://docs.stripe.com/webhooks#event-ordering), so
``checkout.session.completed`` and ``customer.subscription.created`` are accepted in either
order; a machine is requested once both a customer email and a paid plan are known.  No Stripe
API call is made on this path: everything comes from the event payloads.  Both the 2023
object shapes and the current ones (period fields moved to subscription items) are read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

import stripe

from control.db import write_transaction
from control.errors import BadRequest, SignatureError
from control.models import Subscription, Tenant, WebhookEvent, utcnow
from control.providers.base import PLANS
from control.services.attention import raise_attention

log = logging.getLogger(__name__)

# Subscription statuses that mean "paid": https://docs.stripe.com/api/subscriptions/object#subscription_object-status
PAID_STATUSES = frozenset({"active", "trialing"})
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
# (https://docs.stripe.com/api/checkout/sessions/object, .../subscriptions/object). Webhook
# payloads are never expanded except where the reference says "expandable" and we accept it.
_TEXT, _OBJECT, _LIST, _TIME = "text", "object", "list", "timestamp"
_SHAPES = {
    "checkout.session": {
        ("mode",): _TEXT, ("customer",): _TEXT, ("customer_email",): _TEXT,
        ("customer_details",): _OBJECT, ("customer_details", "email"): _TEXT,
        ("subscription",): (_TEXT, _OBJECT), ("subscription", "id"): _TEXT,
        ("metadata",): _OBJECT, ("metadata", "plan"): _TEXT, ("payment_status",): _TEXT,
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
    kind = "checkout.session" if event_type.startswith("checkout.session.") else "subscription"
    _check_shape(obj, _SHAPES[kind], kind)
    if kind == "subscription":
        items = (obj.get("items") or {}).get("data") or []
        for item in items[:1]:
            if not isinstance(item, dict):
                raise BadRequest("subscription.items.data[0] must be an object")
            _check_shape(item, _SHAPES["subscription_item"], "subscription.items.data[0]")


def _check_shape(obj: dict, shape: dict, name: str) -> None:
    for path, kinds in shape.items():
        value = obj
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if not any(_has_kind(value, kind) for kind in kinds):
            raise BadRequest(f"{name}.{'.'.join(path)} must be {' or '.join(kinds)}")


def _has_kind(value, kind: str) -> bool:
    if kind == _TEXT:
        return _is_short_text(value)
    if kind == _TIME:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIMESTAMP
    return isinstance(value, dict if kind == _OBJECT else list)


def _is_short_text(value) -> bool:
    return isinstance(value, str) and len(value) <= MAX_TEXT and "\x00" not in value


def handle_event(event: dict, price_plans: dict[str, str],
                 request_machine: Callable[[Tenant, str], object],
                 release_machine: Callable[[Tenant], object] | None = None) -> str:
    """Apply one verified Stripe event; idempotent on the event id.

    Args:
        event: the event as JSON-decoded dict (``id``, ``type``, ``data.object``).
        price_plans: fallback ``{price_id: plan}`` map (settings ``STRIPE_PRICE_PLANS``).
        request_machine: called with ``(tenant, plan)`` when the tenant should get a machine;
            it must be idempotent itself (``provisioning.request_machine``).
        release_machine: called with the tenant when its subscription ended
            (``customer.subscription.deleted``); idempotent too.

    Returns:
        ``duplicate``, ``ignored`` or ``processed``.

    Raises:
        BadRequest: the event lacks an id, a type or a data object, or a field the handler
            reads has the wrong type (``check_object``).
    """
    event_id, event_type = event.get("id"), event.get("type")
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not _is_short_text(event_id) or not _is_short_text(event_type) or not isinstance(obj, dict):
        raise BadRequest("Stripe event needs id, type and data.object")
    handler = HANDLERS.get(event_type)
    if handler is not None:
        check_object(event_type, obj)
    with write_transaction():
        created = (WebhookEvent.insert(provider="stripe", event_id=event_id, event_type=event_type)
                   .on_conflict_ignore().as_rowcount().execute())
        if not created:
            return "duplicate"
        if handler is None:
            return "ignored"
        tenant = handler(obj, price_plans)
        ended = event_type == "customer.subscription.deleted" and tenant is not None
        plan = _ready_plan(tenant) if tenant is not None and not ended else None
    if ended and release_machine is not None:
        _cancel(tenant)
        release_machine(tenant)
    if plan is not None:
        request_machine(tenant, plan)
    return "processed"


def _cancel(tenant: Tenant) -> None:
    """Mark the tenant canceled unless another paid subscription keeps it active."""
    still_paid = Subscription.select().where(
        (Subscription.tenant == tenant) & Subscription.status.in_(PAID_STATUSES)).exists()
    if not still_paid:
        tenant.status, tenant.updated_at = "canceled", utcnow()
        tenant.save()


def _on_checkout_completed(session: dict, price_plans: dict[str, str]) -> Tenant | None:
    if session.get("mode") not in (None, "subscription"):
        return None
    email = session.get("customer_email") or (session.get("customer_details") or {}).get("email")
    tenant = _tenant_for(session.get("customer"), email)
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
        if session.get("payment_status") in PAID_CHECKOUT and sub.status not in PAID_STATUSES:
            sub.status = "active"
        sub.updated_at = utcnow()
        sub.save()
    return tenant


def _on_subscription_event(sub_obj: dict, price_plans: dict[str, str]) -> Tenant | None:
    customer = sub_obj.get("customer")
    if isinstance(customer, dict):
        customer = customer.get("id")
    sub_id = sub_obj.get("id")
    if not sub_id:
        raise BadRequest("subscription object without id")
    tenant = _tenant_for(customer, None)
    sub, _ = Subscription.get_or_create(stripe_subscription_id=sub_id,
                                        defaults={"stripe_customer_id": customer})
    plan, price_id = plan_of_subscription(sub_obj, price_plans)
    sub.tenant = tenant
    sub.stripe_customer_id = customer
    sub.status = sub_obj.get("status") or sub.status
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


def _tenant_for(customer_id: str | None, email: str | None) -> Tenant:
    tenant = Tenant.get_or_none(Tenant.stripe_customer_id == customer_id) if customer_id else None
    if tenant is None and email:
        tenant = Tenant.get_or_none(Tenant.email == email)
    if tenant is None:
        tenant = Tenant.create(stripe_customer_id=customer_id, email=email)
    changed = False
    if customer_id and tenant.stripe_customer_id is None:
        tenant.stripe_customer_id, changed = customer_id, True
    if email and tenant.email is None:
        tenant.email, changed = email, True
    if changed:
        tenant.updated_at = utcnow()
        tenant.save()
    return tenant


def _ready_plan(tenant: Tenant) -> str | None:
    """Return the plan to provision when the tenant has an email and a paid, known plan."""
    if not tenant.email:
        return None
    subs = Subscription.select().where(
        ((Subscription.tenant == tenant) | (Subscription.stripe_customer_id == tenant.stripe_customer_id))
        & Subscription.status.in_(PAID_STATUSES) & Subscription.plan.is_null(False)
    )
    sub = subs.first()
    if sub is None:
        return None
    if sub.tenant_id != tenant.id:
        sub.tenant = tenant
        sub.save()
    if tenant.plan != sub.plan or tenant.status != "active":
        tenant.plan, tenant.status, tenant.updated_at = sub.plan, "active", utcnow()
        tenant.save()
    return sub.plan


HANDLERS: dict[str, Callable[[dict, dict[str, str]], Tenant | None]] = {
    "checkout.session.completed": _on_checkout_completed,
    "customer.subscription.created": _on_subscription_event,
    "customer.subscription.updated": _on_subscription_event,
    "customer.subscription.deleted": _on_subscription_event,
}
