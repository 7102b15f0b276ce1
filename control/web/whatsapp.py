"""WhatsApp Cloud API webhook: ``GET /webhooks/whatsapp`` (the subscription handshake) and
``POST /webhooks/whatsapp`` (messages and status callbacks).

Order of checks on a POST (DESIGN.md "Webhooks"): the body is capped (413), then
``X-Hub-Signature-256`` is verified on the raw bytes with ``WHATSAPP_APP_SECRET`` (401, nothing
parsed or stored; no secret configured means WhatsApp is off and every POST is 401), then the
body must be UTF-8 JSON of the Cloud API's shape (400).  Only then is anything stored:

* each message is routed once per wamid (``control.services.channel_routing``: link with
  ``/link CODE``, refuse the unlinked, publish for the agent), then opens (or extends) the
  user's 24-hour window at its own timestamp (``control.services.whatsapp_window``); the
  control plane's own answers ("not linked yet", "Linked!") are
  queued (``ControlTasks.send_channel_text``), so Meta gets its 200 without waiting for the
  Graph API (Meta retries a webhook that is not answered 200 quickly:
  https://developers.facebook.com/docs/graph-api/webhooks/getting-started#event-notifications);
* a message with attachments is handed to the ``ingest_media`` task, which downloads its
  files (``WhatsAppAdapter.fetch_media``) and stores them before the envelope is published
  (``control.services.channel_routing.publish``);
* each status goes to the delivery ledger (``control.services.whatsapp_status``).

A bus outage answers 503 before anything is recorded for the failing message, so Meta's retry
publishes it; a redelivered message is a ``duplicate``.  Why the checks are ours and not
pywa's webhook server: see ``control.channels.whatsapp``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flask import Response, current_app, jsonify, request
from werkzeug.exceptions import Forbidden

from control.channels.whatsapp import WhatsAppConfig
from control.channels.whatsapp_inbound import (
    CHANNEL,
    parse_webhook,
    verification_challenge,
    verify_signature,
)
from control.db import write_transaction
from control.models import utcnow
from control.services import channel_routing, channel_texts, whatsapp_status, whatsapp_window
from control.web import runtime
from control.web.webhooks import json_body, retry_later, webhook_blueprint
from wire.errors import BusUnavailable

log = logging.getLogger(__name__)

bp = webhook_blueprint("whatsapp", __name__)  # signed by Meta (X-Hub-Signature-256)

PATH = "/webhooks/whatsapp"
def init_app(app, rt, config: WhatsAppConfig | None = None) -> None:
    """Keep the WhatsApp config (default: from ``rt.settings``) and register ``bp``."""
    app.extensions["whatsapp"] = config or WhatsAppConfig.from_settings(rt.settings)
    app.register_blueprint(bp)


def _config() -> WhatsAppConfig:
    return current_app.extensions["whatsapp"]


@bp.get(PATH)
def verify():
    """Meta's handshake: echo ``hub.challenge`` as text when ``hub.verify_token`` is ours, else 403."""
    challenge = verification_challenge(request.args, _config().verify_token)
    if challenge is None:
        raise Forbidden("hub.mode is not subscribe, or hub.verify_token is not WHATSAPP_VERIFY_TOKEN")
    return Response(challenge, status=200, mimetype="text/plain")


@bp.post(PATH)
def receive():
    """Verify, parse, then route messages and record statuses (module docstring)."""
    rt = runtime()
    raw = request.get_data(cache=False)
    verify_signature(raw, request.headers.get("X-Hub-Signature-256"), _config().app_secret)
    batch = parse_webhook(json_body(raw))
    notice = rt.tasks.paused_notice
    outcomes = []
    for message in batch.messages:
        try:
            # One commit for both (a commit is the costly part of the ack), and before the
            # answer below is queued: the message opens the window the answer is sent in.
            with write_transaction():
                result = channel_routing.route_inbound(
                    message, rt.bus, channel_texts.WHATSAPP, envelope_key=rt.envelope_key, paused_notice=notice,
                    ingest_media=rt.tasks.ingest_media)
                whatsapp_window.record_inbound(message.user_id,
                                               _sent_at(batch.sent_at.get(message.message_id)))
        except BusUnavailable as exc:
            raise retry_later(exc, f"Meta will retry WhatsApp message {message.message_id}") from exc
        if result.answer:
            rt.tasks.send_channel_text(CHANNEL, message.chat_id, result.answer)
        outcomes.append(result.outcome)
    statuses = [whatsapp_status.record_status(update) for update in batch.statuses]
    for update, outcome in zip(batch.statuses, statuses, strict=True):
        if outcome == "unknown":  # matched again later: the reply's id may not be saved yet
            rt.tasks.record_whatsapp_status(update.message_id, update.status, update.recipient,
                                            update.timestamp, update.error)
    return jsonify(ok=True, outcome="received", messages=outcomes, statuses=statuses)


def _sent_at(stamp: int | None) -> datetime:
    """The user's message time for the window: its timestamp, never later than now."""
    now = utcnow()
    if stamp is None:
        return now
    try:
        sent = datetime.fromtimestamp(stamp, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return now
    return min(sent, now)
