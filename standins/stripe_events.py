"""Signed Stripe webhook events built from Stripe's published objects (``payloads/stripe``).

Stripe's signature scheme (https://docs.stripe.com/webhooks#verify-manually): the header
``Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" with the
endpoint secret>``.  The official stripe-mock cannot run here, so tests and ``hermes demo``
sign payloads themselves with this scheme and the control plane verifies them with the
``stripe`` SDK.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import time
from importlib import resources


def published_object(name: str, shape: str = "latest") -> dict:
    """Return a published Stripe object (``checkout.session``, ``subscription``, ...).

    Args:
        name: the fixture key.
        shape: ``latest`` (2026 API shape) or ``2023`` (the older shape).
    """
    folder = resources.files("standins") / "payloads" / "stripe"
    if shape == "latest":
        folder = folder / "latest"
    return json.loads((folder / f"{name}.json").read_text())


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Return a ``Stripe-Signature`` header value for ``payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(event_type: str, obj: dict, event_id: str) -> dict:
    """Wrap ``obj`` in an Event object as Stripe delivers it to webhooks."""
    return {"id": event_id, "object": "event", "api_version": "2026-08-27.basil",
            "created": int(time.time()), "livemode": False, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type, "data": {"object": obj}}


def checkout_completed(*, email: str, customer: str, subscription: str, shape: str = "latest",
                       event_id: str = "evt_checkout_1") -> dict:
    """``checkout.session.completed`` for a paid subscription checkout, from the published session."""
    session = copy.deepcopy(published_object("checkout.session", shape))
    session.update(mode="subscription", status="complete", payment_status="paid",
                   customer=customer, subscription=subscription, payment_intent=None)
    session["customer_details"]["email"] = email
    return event("checkout.session.completed", session, event_id)


def subscription_created(*, customer: str, subscription: str, plan: str | None,
                         shape: str = "latest", event_id: str = "evt_subscription_1",
                         status: str = "active", event_type: str = "customer.subscription.created") -> dict:
    """``customer.subscription.*`` from the published subscription; the price's ``lookup_key`` is ``plan``."""
    sub = copy.deepcopy(published_object("subscription", shape))
    sub.update(id=subscription, customer=customer, status=status)
    for item in sub["items"]["data"]:
        item["subscription"] = subscription
        item["price"]["lookup_key"] = plan
    return event(event_type, sub, event_id)
