"""Routing: a verified Telegram update → control-plane reply or an Envelope on the tenant's bus.

Linked private chats reach their tenant's agent; ``/start`` and ``/help`` from a chat that
is not linked are answered here, and an unlinked chat never reaches any agent.  Nor does a
chat whose tenant's subscription ended: the control plane answers why (``lifecycle``).  Idempotent on
``update_id``: the update is recorded and the envelope published in one database
transaction, and the envelope id is derived from the chat and message ids, so a retried
update after a partial failure publishes nothing twice (the bus dedupes on envelope id).
That derivation is keyed (``envelope_id_for``): a tenant who knows another's chat and next
message id still cannot compute the envelope id and claim it first (issue #19).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from control.channels.telegram import InboundUpdate
from control.db import write_transaction
from control.errors import LinkError
from control.models import Message, Tenant, WebhookEvent
from control.services import lifecycle, linking, notices
from wire import logs
from wire.bus import Bus
from wire.protocol import Envelope

log = logging.getLogger(__name__)

# What the envelope-id key is derived for, so it is used for nothing else than
# ``HERMES_SECRET_KEY`` is (sessions, CSRF, media URLs).
ENVELOPE_KEY_PURPOSE = b"envelope-id"
ENVELOPE_ID_LENGTH = 32  # hex characters: 128 bits, as long as the UUID hex ids of new_id()

HELP_UNLINKED = (
    "Hi! I'm Hermes, your personal AI agent. To connect this chat to your agent, open the "
    "link from your welcome email (it looks like t.me/{bot}?start=CODE), or send /start CODE."
)
HELP_LINKED = (
    "You're connected to your Hermes agent: just write to it. Commands: /remember TEXT, "
    "/forget QUERY, /memory [QUERY], /cron add|list|pause|resume|remove, /skills, /model, "
    "/usage, /status, /reset (new conversation), /stop (cancel the running answer)."
)
LINKED_OK = "Linked! This chat now talks to your personal Hermes agent. Say hello."


@dataclass(frozen=True)
class RoutingResult:
    """What happened to an update: ``outcome`` and, if published, the envelope."""

    outcome: str
    envelope: Envelope | None = None


def envelope_key(secret_key: str) -> bytes:
    """Return the key of platform envelope ids: HMAC-SHA256(``secret_key``, ``"envelope-id"``).

    A subkey, so an envelope id (which every agent sees) reveals nothing about
    ``HERMES_SECRET_KEY`` itself.

    Args:
        secret_key: ``HERMES_SECRET_KEY`` (``control.web.auth.secret_key``).

    Returns:
        32 bytes.  Rotating the secret key changes every envelope id from then on, so a
        webhook that failed before the rotation and is retried after it is published twice.
    """
    return hmac.new(secret_key.encode(), ENVELOPE_KEY_PURPOSE, hashlib.sha256).digest()


def envelope_id_for(key: bytes, channel: str, chat_id: str, message_id: str) -> str:
    """Return the envelope id of a platform message: deterministic, unpredictable to tenants.

    HMAC-SHA256 with ``key`` over ``channel:chat_id:message_id``, as 32 lowercase hex characters
    (the shape of ``new_id()``).  The same message always gets the same id, so a webhook retried
    after its transaction failed past the bus append republishes under the same idempotency key;
    without ``key`` nobody can compute the id of a message (unlike the platform's message ids,
    which are sequential), so no tenant can claim another's future id first (issue #19).

    Args:
        key: ``envelope_key(HERMES_SECRET_KEY)`` (``Runtime.envelope_key``).
        channel, chat_id, message_id: the platform message (no platform's message id holds a
            ``:``, so the joined text names one message).
    """
    text = f"{channel}:{chat_id}:{message_id}".encode()
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:ENVELOPE_ID_LENGTH]


def route_telegram_update(update: InboundUpdate, bus: Bus, reply: Callable[[str, str], object],
                          bot_username: str, *, envelope_key: bytes,
                          paused_notice: Callable[[Tenant], str] | None = None,
                          ingest_media: Callable[[str], object] | None = None) -> RoutingResult:
    """Route one verified, parsed Telegram update.

    Args:
        update: the parsed update.
        bus: where envelopes go.
        reply: ``reply(chat_id, text)`` schedules a control-plane answer (a Huey task).
        bot_username: for the linking help text.
        envelope_key: the key of envelope ids (``envelope_id_for``).
        paused_notice: the answer for a chat whose tenant's subscription ended
            (``lifecycle.pause_notice``): its messages never reach the (paused or archived)
            agent; None answers ``Notice.ENDED``.
        ingest_media: queues the download of a message's files before it is published
            (``channel_routing.publish``; ``control.services.media``).

    Returns:
        ``RoutingResult`` with outcome ``duplicate``, ``ignored``, ``answered`` or ``published``.

    Raises:
        wire.errors.BusUnavailable: the envelope could not be published; nothing was recorded
            (the webhook answers 503 so Telegram retries).
    """
    with write_transaction():
        created = (WebhookEvent.insert(provider="telegram", event_id=str(update.update_id),
                                       event_type=update.kind)
                   .on_conflict_ignore().as_rowcount().execute())
        if not created:
            return RoutingResult("duplicate")
        if not update.is_private_message or update.chat_id is None:
            return RoutingResult("ignored")
        chat_id = update.chat_id
        tenant = linking.tenant_for_chat("telegram", chat_id)
        command = update.command()
        if command is not None and command[0] == "start":
            return _start(update, chat_id, command[1], tenant, reply, bot_username)
        if tenant is None:
            reply(chat_id, HELP_UNLINKED.format(bot=bot_username))
            return RoutingResult("answered")
        if lifecycle.is_paused(tenant):
            reply(chat_id, paused_notice(tenant) if paused_notice
                  else notices.render(notices.Notice.ENDED, tenant.language, url="/billing")[1])
            return RoutingResult("answered")
        if command is not None and command[0] == "help":
            reply(chat_id, HELP_LINKED)
            return RoutingResult("answered")
        if not update.text and not update.attachments:
            return RoutingResult("ignored")
        envelope = _publish(update, chat_id, tenant, bus, envelope_key, ingest_media)
    return RoutingResult("published", envelope)


def _start(update: InboundUpdate, chat_id: str, token: str, tenant: Tenant | None,
           reply: Callable[[str, str], object], bot_username: str) -> RoutingResult:
    if not token:
        reply(chat_id, HELP_LINKED if tenant else HELP_UNLINKED.format(bot=bot_username))
        return RoutingResult("answered")
    try:
        linking.redeem(token, "telegram", chat_id, update.user_id or "")
    except LinkError as exc:
        reply(chat_id, f"{exc} " + HELP_UNLINKED.format(bot=bot_username))
        return RoutingResult("answered")
    reply(chat_id, LINKED_OK)
    return RoutingResult("answered")


def tenant_preferences(tenant: Tenant) -> dict[str, str]:
    """Return the tenant's dashboard settings as ``Envelope.preferences``.

    Keys (``wire.protocol.PREFERENCE_KEYS``): ``timezone``, ``language``, ``model`` and
    ``about`` (the ``preferences`` text); a key is present only when the tenant set it, so an
    empty dict tells the agent every setting was cleared (``None`` would mean "unknown").
    """
    values = {"timezone": tenant.timezone, "language": tenant.language, "model": tenant.model,
              "about": tenant.preferences}
    return {key: value for key, value in values.items() if value}


def record_control_reply(channel: str, chat_id: str, text: str, platform_message_id: str) -> Message:
    """Log an answer the control plane sent itself (help, linking) with its platform id.

    The delivery worker's crash recovery skips every message id the log knows
    (``control.services.delivery_recovery``), so these answers are never mistaken for a lost reply.
    """
    return Message.create(tenant=linking.tenant_for_chat(channel, chat_id),
                          envelope_id=f"control-{uuid.uuid4().hex}", direction="out",
                          channel=channel, chat_id=chat_id, text=text,
                          platform_message_id=platform_message_id)


def _publish(update: InboundUpdate, chat_id: str, tenant: Tenant, bus: Bus, key: bytes,
             ingest_media: Callable[[str], object] | None) -> Envelope:
    # channel_routing imports this module (envelope_id_for) at import time.
    from control.services.channel_routing import publish

    envelope = Envelope(
        id=envelope_id_for(key, "telegram", chat_id, update.message_id or str(update.update_id)),
        tenant=str(tenant.id),
        channel="telegram",
        chat_id=chat_id,
        sender_id=update.user_id or "",
        text=update.text,
        attachments=list(update.attachments),
        platform_message_id=update.message_id,
        request_id=logs.current("request_id"),  # the webhook's, for the agent's log lines
        preferences=tenant_preferences(tenant),
    )
    Message.insert(envelope_id=envelope.id, direction="in", tenant=tenant, channel="telegram",
                   chat_id=chat_id, text=update.text,
                   platform_message_id=update.message_id).on_conflict_ignore().execute()
    publish(envelope, bus, ingest_media)
    with logs.bound(tenant=envelope.tenant, envelope_id=envelope.id):
        log.info("telegram update %s published for the agent", update.update_id)
    return envelope
