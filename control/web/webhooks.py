"""Webhook endpoints: ``POST /webhooks/stripe``, ``/webhooks/telegram`` and ``/webhooks/discord``.

Signatures are verified on the raw body before anything is parsed or stored (DESIGN.md,
"Webhooks"); the work itself is a service call or a queued task, so answers are fast.
"""

from __future__ import annotations

import json
import logging
import re
from functools import partial
from itertools import accumulate

from flask import Blueprint, jsonify, request

from control.channels import discord, telegram
from control.errors import BadRequest, ServiceUnavailable
from control.services import billing, channel_routing, channel_texts, discord_routing, provisioning
from control.web import runtime
from control.web.auth import csrf
from wire.errors import BusUnavailable

log = logging.getLogger(__name__)



def webhook_blueprint(name: str, import_name: str, **options) -> Blueprint:
    """A blueprint for platform webhooks: exempt from CSRF (each request is signed by the
    platform, verified on the raw body) and bodies capped at ``WEBHOOK_MAX_BYTES`` (413
    before they are read).

    Args:
        name, import_name, **options: as ``flask.Blueprint``.
    """
    blueprint = Blueprint(name, import_name, **options)
    csrf.exempt(blueprint)
    blueprint.before_request(_cap_body)
    return blueprint


def _cap_body() -> None:
    request.max_content_length = WEBHOOK_MAX_BYTES


def retry_later(exc: BusUnavailable, what: str) -> ServiceUnavailable:
    """Log that the bus is down while handling ``what`` and return the 503 to raise (``raise
    retry_later(exc, ...) from exc``): every platform retries a webhook answered 5xx, and
    nothing was stored, so the retry loses nothing."""
    log.error("bus unavailable; %s: %s", what, exc)
    return ServiceUnavailable("message bus unavailable, retry later")


bp = webhook_blueprint("webhooks", __name__, url_prefix="/webhooks")


# Bodies above this answer 413 before they are read. Neither platform publishes a maximum,
# but what a real payload holds is bounded: a Telegram message has at most 4096 characters of
# text or 1024 of caption (https://core.telegram.org/bots/api#sendmessage), about 25 KB even
# fully \u-escaped; Stripe metadata is at most 50 keys of 40 + 500 characters per object
# (https://docs.stripe.com/metadata#data), and the published fixtures in ../shared/realdata are
# at most 4 KB. 1 MiB is some 30x the largest of those, so no genuine delivery is refused (it
# would be retried, then dropped), while a flood of junk costs at most 1 MiB a request.
WEBHOOK_MAX_BYTES = 1024 * 1024
# Deepest published payload is 11 levels (a Stripe invoice inside an event); bounding depth
# before parsing keeps json.loads, and everything that walks the result, far from recursion limits.
MAX_JSON_DEPTH = 64

_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """Return how deeply ``text``'s JSON arrays and objects nest (brackets inside strings do not count)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def json_body(raw: bytes) -> object:
    """Decode a webhook body: UTF-8 JSON (RFC 8259 section 8.1) nested at most ``MAX_JSON_DEPTH``.

    Raises:
        BadRequest: not UTF-8, nested too deeply, or not JSON.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest("body is not UTF-8") from exc
    if nesting_depth(text) > MAX_JSON_DEPTH:
        raise BadRequest(f"body nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
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
    billing.verify_signature(raw, request.headers.get("Stripe-Signature", ""), secret,
                             rt.settings.stripe_tolerance)
    event = json_body(raw)
    if not isinstance(event, dict):
        raise BadRequest("a Stripe event must be a JSON object")
    outcome = billing.handle_event(
        event, rt.settings.stripe_price_plans,
        partial(provisioning.request_machine, enqueue=rt.tasks.provision_machine,
                enqueue_resize=rt.tasks.resize_machine, enqueue_resume=rt.tasks.resume_machine),
        lambda tenant: rt.tasks.pause_machine(tenant.id),
        grace_days=rt.settings.grace_days, billing_url=rt.tasks.billing_url(),
        send_notice=rt.tasks.send_notice)
    return jsonify(received=True, outcome=outcome)


@bp.post("/telegram")
def telegram_webhook():
    """Verify ``X-Telegram-Bot-Api-Secret-Token`` and route the update.

    https://core.telegram.org/bots/api#setwebhook
    """
    rt = runtime()
    telegram.verify_secret(request.headers.get("X-Telegram-Bot-Api-Secret-Token"),
                           rt.settings.telegram_webhook_secret)
    update = telegram.parse_update(json_body(request.get_data(cache=False)),
                                   max_photo_bytes=rt.settings.media_max_bytes)
    message = telegram.inbound_message(update)
    if message is None:
        return jsonify(ok=True, outcome="ignored")
    try:
        result = channel_routing.route_inbound(
            message, rt.bus, channel_texts.telegram(rt.settings.telegram_bot_username),
            envelope_key=rt.envelope_key, paused_notice=rt.tasks.paused_notice,
            ingest_media=rt.tasks.ingest_media)
    except BusUnavailable as exc:
        raise retry_later(exc, f"asking Telegram to retry update {update.update_id}") from exc
    if result.answer:
        rt.tasks.send_channel_text("telegram", message.chat_id, result.answer)
    return jsonify(ok=True, outcome=result.outcome)


@bp.post("/discord")
def discord_webhook():
    """Verify Discord's Ed25519 signature and answer the interaction.

    https://discord.com/developers/docs/interactions/overview#setting-up-an-endpoint-validating-security-request-headers

    PING gets PONG; a command for the agent a deferred response within Discord's 3 seconds
    (``control.services.discord_routing``).
    """
    rt = runtime()
    raw = request.get_data(cache=False)
    discord.verify_signature(rt.settings.discord_public_key, request.headers.get("X-Signature-Ed25519"),
                             request.headers.get("X-Signature-Timestamp"), raw)
    interaction = discord.parse_interaction(json_body(raw), rt.settings.discord_application_id)
    try:
        answer = discord_routing.respond(
            interaction, rt.bus, rt.secrets_box, envelope_key=rt.envelope_key,
            paused_notice=rt.tasks.paused_notice, queue=rt.tasks.route_discord_interaction)
    except BusUnavailable as exc:
        raise retry_later(exc, f"failing Discord interaction {interaction.id}") from exc
    return jsonify(answer)
