"""Routing for every platform but Telegram: a verified ``InboundMessage`` → an answer or an Envelope.

The same rules as ``control.services.routing`` (Telegram), for a platform-neutral message:
idempotent on ``(channel, event_id)`` (a ``WebhookEvent`` row written in the transaction that
publishes), linking with the single-use token flow (``/link CODE``; ``/start CODE`` too),
an unlinked identity answered here and never forwarded to any agent, a paused tenant told why,
and the envelope id derived from the chat and message ids (keyed: ``routing.envelope_id_for``)
so a retried delivery is published once.  The answer is returned, not sent: a Discord
interaction answers in its HTTP response, a Gateway DM or a Slack event through the platform's
API.

Files (issue #12): ``publish`` is every platform's way onto the bus.  An envelope with
attachments is not appended here: it goes to ``ingest_media`` (the ``ingest_media`` Huey task),
which downloads and stores the files and then appends it (``control.services.media``), so the
webhook answers without downloading anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from control.channels.base import InboundMessage
from control.db import write_transaction
from control.errors import LinkError
from control.models import Message, Tenant, WebhookEvent
from control.services import lifecycle, linking, notices
from control.services.channel_texts import ChannelTexts
from control.services.routing import envelope_id_for, tenant_preferences
from wire import logs
from wire.bus import Bus
from wire.protocol import Envelope, messages_stream

log = logging.getLogger(__name__)

LINK_COMMANDS = ("link", "start")
@dataclass(frozen=True)
class InboundResult:
    """What happened: ``outcome`` (``duplicate``, ``ignored``, ``answered``, ``linked``,
    ``published``), the control plane's ``answer`` text when it answered, the envelope when
    published."""

    outcome: str
    answer: str | None = None
    envelope: Envelope | None = None


#: ``ingest_media(envelope_json)`` queues the download of an envelope's files and its publication
#: (``ControlTasks.ingest_media``).
IngestMedia = Callable[[str], object]


def route_inbound(message: InboundMessage, bus: Bus, texts: ChannelTexts, *, envelope_key: bytes,
                  paused_notice: Callable[[Tenant], str] | None = None,
                  ingest_media: IngestMedia | None = None) -> InboundResult:
    """Route one verified message from ``message.channel``.

    Args:
        message: the parsed message; ``identity`` is what ``ChatIdentity`` links.
        bus: where envelopes go.
        texts: the platform's answers.
        envelope_key: the key of envelope ids (``routing.envelope_id_for``).
        paused_notice: the answer for a tenant whose subscription ended
            (``lifecycle.pause_notice``); None answers ``Notice.ENDED``.
        ingest_media: where an envelope with attachments goes (``publish``).

    Returns:
        ``InboundResult``; nothing reaches an agent unless the outcome is ``published``.

    Raises:
        wire.errors.BusUnavailable: the envelope could not be published; nothing was recorded
            (the caller answers 503, or retries).
    """
    with write_transaction():
        created = (WebhookEvent.insert(provider=message.channel, event_id=message.event_id,
                                       event_type=message.event_type)
                   .on_conflict_ignore().as_rowcount().execute())
        if not created:
            return InboundResult("duplicate")
        tenant = linking.tenant_for_chat(message.channel, message.identity)
        command = message.command
        if command is not None and command[0] in LINK_COMMANDS:
            return _link(message, command[1], tenant, texts)
        if tenant is None:
            return InboundResult("answered", texts.unlinked)
        if lifecycle.is_paused(tenant):
            return InboundResult("answered", paused_notice(tenant) if paused_notice
                                 else notices.render(notices.Notice.ENDED, tenant.language, url="/billing")[1])
        if command is not None and command[0] == "help":
            return InboundResult("answered", texts.linked_help)
        if not message.text and not message.attachments:
            return InboundResult("ignored")
        envelope = _publish(message, tenant, bus, envelope_key, ingest_media)
    return InboundResult("published", envelope=envelope)


def _link(message: InboundMessage, token: str, tenant: Tenant | None,
          texts: ChannelTexts) -> InboundResult:
    if not token:
        return InboundResult("answered", texts.linked_help if tenant else texts.unlinked)
    try:
        linking.redeem(token, message.channel, message.identity, message.user_id)
    except LinkError as exc:
        return InboundResult("answered", f"{exc} {texts.unlinked}")
    log.info("%s identity linked", message.channel)
    return InboundResult("linked", texts.linked_ok)


def publish(envelope: Envelope, bus: Bus, ingest_media: IngestMedia | None = None) -> None:
    """Send a routed envelope on its way (call inside the routing transaction, after the
    ``Message`` row is written): appended to the tenant's inbox at once when it has no
    attachments, else handed to ``ingest_media`` (its files are downloaded and stored, then it
    is appended: ``control.services.media``).  Without ``ingest_media`` (a caller that cannot
    queue tasks) the files are marked ``unavailable`` so the agent says so instead of
    pretending it saw them.

    Raises:
        wire.errors.BusUnavailable: the envelope could not be appended (nothing is recorded
            when called inside the routing transaction).
    """
    if envelope.attachments and ingest_media is not None:
        ingest_media(envelope.to_json())
        return
    if envelope.attachments:
        log.warning("envelope %s: no media task to download its files", envelope.id)
        envelope = replace(envelope, attachments=[{**a, "error": "unavailable"}
                                                  for a in envelope.attachments])
    bus.append(messages_stream(envelope.tenant), envelope.to_json(), idempotency_key=envelope.id)


def _publish(message: InboundMessage, tenant: Tenant, bus: Bus, key: bytes,
             ingest_media: IngestMedia | None) -> Envelope:
    envelope = Envelope(
        id=envelope_id_for(key, message.channel, message.chat_id, message.message_id),
        tenant=str(tenant.id), channel=message.channel, chat_id=message.chat_id,
        sender_id=message.user_id, text=message.text, attachments=list(message.attachments),
        platform_message_id=message.message_id, request_id=logs.current("request_id"),
        preferences=tenant_preferences(tenant))
    Message.insert(envelope_id=envelope.id, direction="in", tenant=tenant, channel=message.channel,
                   chat_id=message.chat_id, text=message.text,
                   platform_message_id=message.message_id).on_conflict_ignore().execute()
    publish(envelope, bus, ingest_media)
    with logs.bound(tenant=envelope.tenant, envelope_id=envelope.id):
        log.info("%s %s %s published for the agent", message.channel, message.event_type,
                 message.event_id)
    return envelope
