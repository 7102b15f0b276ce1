"""Webhook endpoints: ``POST /webhooks/stripe`` and ``POST /webhooks/telegram``.

Signatures are verified on the raw body before anything is parsed or stored (DESIGN.md,
"Webhooks"); the work itself is a service call or a queued task, so answers are fast.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import stripe
from flask import Blueprint, jsonify, request

from control.channels import telegram
from control.errors import BadRequest, ServiceUnavailable, SignatureError
from control.services import billing, provisioning, routing
from control.web import runtime
from wire.errors import BusUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


def _json_body(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequest(f"body is not valid JSON: {exc}") from exc


@bp.post("/stripe")
def stripe_webhook():
    """Verify ``Stripe-Signature`` (https://docs.stripe.com/webhooks#verify-events) and apply the event."""
    rt = runtime()
    secret = rt.settings.stripe_webhook_secret
    if not secret:
        log.error("STRIPE_WEBHOOK_SECRET is not set; refusing Stripe webhooks so Stripe retries")
        raise ServiceUnavailable("Stripe webhooks are not configured")
    raw = request.get_data(cache=False)
    header = request.headers.get("Stripe-Signature", "")
    try:
        stripe.WebhookSignature.verify_header(raw, header, secret,
                                              rt.settings.stripe_tolerance)
    except stripe.SignatureVerificationError as exc:
        raise SignatureError(f"Stripe signature verification failed: {exc.user_message or exc}") from exc
    event = _json_body(raw)
    if not isinstance(event, dict):
        raise BadRequest("a Stripe event must be a JSON object")
    outcome = billing.handle_event(
        event, rt.settings.stripe_price_plans,
        partial(provisioning.request_machine, enqueue=rt.tasks.provision_machine,
                enqueue_resize=rt.tasks.resize_machine),
        partial(provisioning.release_machine, enqueue=rt.tasks.deprovision_machine))
    return jsonify(received=True, outcome=outcome)


@bp.post("/telegram")
def telegram_webhook():
    """Verify ``X-Telegram-Bot-Api-Secret-Token`` (https://core.telegram.org/bots/api#setwebhook) and route the update."""
    rt = runtime()
    telegram.verify_secret(request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
                           rt.settings.telegram_webhook_secret)
    update = telegram.parse_update(_json_body(request.get_data(cache=False)))
    try:
        result = routing.route_telegram_update(update, rt.bus, rt.tasks.send_text,
                                               rt.settings.telegram_bot_username)
    except BusUnavailable as exc:
        log.error("bus unavailable; asking Telegram to retry update %s: %s", update.update_id, exc)
        raise ServiceUnavailable("message bus unavailable, retry later") from exc
    return jsonify(ok=True, outcome=result.outcome)
