"""Delivery: agent events → chat messages, throttled, and recorded in a delivery ledger.

The first text of a reply is sent with ``sendMessage``; later deltas edit that message with
``editMessageText`` at most once per ``edit_interval`` seconds per chat (Telegram limits bots
to about one message per second per chat: https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this);
a 429 answer's ``retry_after`` pauses that chat.  The ``final`` event is acknowledged on the bus
only after Telegram confirmed the final text and the ledger says ``delivered``, so a restart
never resends a delivered reply and always finishes an undelivered one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from control.channels.telegram import BotApiClient, BotApiError
from control.models import Delivery, Message, Tenant, Usage, utcnow
from control.services.attention import raise_attention
from wire.bus import Bus
from wire.errors import MalformedMessage
from wire.protocol import Event, events_stream

log = logging.getLogger(__name__)

DELIVERY_GROUP = "delivery"
# Telegram's maximum message length in characters (https://core.telegram.org/bots/api#sendmessage).
TELEGRAM_MAX_TEXT = 4096
TYPING_INTERVAL = 4.0  # seconds; a chat action shows for about 5 s.
TRANSIENT_BACKOFF = 2.0  # seconds before retrying a chat after a transport or 5xx error.


@dataclass
class PendingReply:
    """A reply being delivered: the newest text and, once final, the bus entry to ack."""

    event: Event
    text: str
    final: bool = False
    final_delivery: object = None
    sent_text: str = ""


@dataclass
class ChatClock:
    """When a chat may next be sent to or edited (monotonic seconds)."""

    next_send_at: float = 0.0
    next_typing_at: float = 0.0


def split_text(text: str, limit: int = TELEGRAM_MAX_TEXT) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, preferring line breaks."""
    chunks = []
    while len(text) > limit:
        cut = text.rfind("\n", 0, limit)
        cut = cut if cut >= limit // 2 else limit
        chunks.append(text[:cut])
        text = text[cut:].lstrip("\n")
    return chunks + [text]


class DeliveryWorker:
    """Consumes every ready tenant's events stream and delivers replies to Telegram.

    Args:
        bus: the bus.
        client: the Bot API client.
        tenant_ids: returns the ids of tenants whose events to consume.
        edit_interval: minimum seconds between sends/edits in one chat.
        consumer: this worker's consumer name in the ``delivery`` group.
        clock: monotonic clock in seconds.
    """

    def __init__(self, bus: Bus, client: BotApiClient, tenant_ids: Callable[[], list[int]], *,
                 edit_interval: float = 1.0, consumer: str = "control",
                 clock: Callable[[], float] = time.monotonic):
        self.bus = bus
        self.client = client
        self.tenant_ids = tenant_ids
        self.edit_interval = edit_interval
        self.consumer = consumer
        self.clock = clock
        self.pending: dict[str, PendingReply] = {}
        self.chats: dict[str, ChatClock] = {}

    def step(self, block: float = 0.2) -> int:
        """Read available events (waiting up to ``block`` seconds), then flush due sends.

        Returns the number of events read.
        """
        streams = [events_stream(str(t)) for t in self.tenant_ids()]
        deliveries = self.bus.read(streams, DELIVERY_GROUP, self.consumer, count=100,
                                   block=0.0 if self.pending else block) if streams else []
        for delivery in deliveries:
            self._take(delivery)
        self.flush()
        return len(deliveries)

    def _take(self, delivery) -> None:
        try:
            event = Event.from_json(delivery.payload)
        except MalformedMessage as exc:
            log.error("dead-lettering malformed event %s: %s", delivery.entry_id, exc)
            self.bus.dead_letter(delivery, DELIVERY_GROUP, str(exc))
            return
        ledger = Delivery.get_or_none(Delivery.envelope_id == event.message_id)
        if ledger is not None and ledger.state == "delivered":
            self.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)
            return
        if event.kind == "status":
            self._typing(event)
        elif event.kind == "delta":
            reply = self.pending.get(event.message_id)
            if reply is None:
                self.pending[event.message_id] = PendingReply(event, event.text)
            elif not reply.final:
                reply.text = event.text
        else:
            reply = self.pending.setdefault(event.message_id, PendingReply(event, event.text))
            reply.event, reply.text, reply.final, reply.final_delivery = event, event.text, True, delivery
            return
        self.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)

    def _typing(self, event: Event) -> None:
        clock = self.chats.setdefault(event.chat_id, ChatClock())
        now = self.clock()
        if now < clock.next_typing_at or event.message_id in self.pending:
            return
        clock.next_typing_at = now + TYPING_INTERVAL
        try:
            self.client.send_chat_action(event.chat_id, "typing")
        except BotApiError as exc:
            log.info("sendChatAction failed for chat %s: %s", event.chat_id, exc)

    def flush(self) -> None:
        """Send or edit every pending reply whose chat is due."""
        for message_id in list(self.pending):
            reply = self.pending[message_id]
            clock = self.chats.setdefault(reply.event.chat_id, ChatClock())
            if self.clock() < clock.next_send_at:
                continue
            if reply.text == reply.sent_text and not reply.final:
                continue
            try:
                self._send(reply)
            except BotApiError as exc:
                self._on_error(reply, clock, exc)
                continue
            clock.next_send_at = self.clock() + self.edit_interval
            if reply.final:
                self._complete(reply)
                del self.pending[message_id]

    def _send(self, reply: PendingReply) -> None:
        event = reply.event
        ledger = Delivery.get_or_none(Delivery.envelope_id == event.message_id)
        chunks = split_text(reply.text) if reply.final else [reply.text[:TELEGRAM_MAX_TEXT]]
        if ledger is None or ledger.platform_message_id is None:
            platform_id = self.client.send_message(event.chat_id, chunks[0])
            if ledger is None:
                ledger = Delivery.create(envelope_id=event.message_id, tenant=int(event.tenant),
                                         channel=event.channel, chat_id=event.chat_id,
                                         platform_message_id=platform_id, last_text=chunks[0])
            else:
                ledger.platform_message_id, ledger.last_text = platform_id, chunks[0]
                ledger.save()
        elif chunks[0] != ledger.last_text:
            self.client.edit_message_text(event.chat_id, ledger.platform_message_id, chunks[0])
            ledger.last_text = chunks[0]
            ledger.save()
        if reply.final:
            for chunk in chunks[1:]:
                self.client.send_message(event.chat_id, chunk)
            ledger.recovered = reply.sent_text == "" and reply.final_delivery.attempts > 1
            ledger.state, ledger.delivered_at = "delivered", utcnow()
            ledger.save()
        reply.sent_text = reply.text

    def _on_error(self, reply: PendingReply, clock: ChatClock, exc: BotApiError) -> None:
        event = reply.event
        if exc.error_code == 429:
            clock.next_send_at = self.clock() + float(exc.retry_after or 1)
            log.info("chat %s rate limited for %ss", event.chat_id, exc.retry_after)
        elif exc.error_code == 400 and "message to edit not found" in str(exc):
            Delivery.update(platform_message_id=None).where(
                Delivery.envelope_id == event.message_id).execute()
        elif exc.error_code in (400, 403):
            log.error("reply %s to chat %s refused: %s", event.message_id, event.chat_id, exc)
            raise_attention("delivery_refused", event.message_id, f"chat {event.chat_id}: {exc}")
            if reply.final:
                self.bus.ack(reply.final_delivery.stream, DELIVERY_GROUP, reply.final_delivery.entry_id)
            del self.pending[event.message_id]
        else:
            clock.next_send_at = self.clock() + TRANSIENT_BACKOFF
            log.warning("delivery to chat %s failed, will retry: %s", event.chat_id, exc)

    def _complete(self, reply: PendingReply) -> None:
        event = reply.event
        tenant = Tenant.get_or_none(Tenant.id == int(event.tenant))
        if tenant is not None:
            ledger = Delivery.get(Delivery.envelope_id == event.message_id)
            Message.get_or_create(envelope_id=event.message_id, direction="out",
                                  defaults={"tenant": tenant, "channel": event.channel,
                                            "chat_id": event.chat_id, "text": reply.text,
                                            "platform_message_id": ledger.platform_message_id})
            record_usage(tenant, event)
        self.bus.ack(reply.final_delivery.stream, DELIVERY_GROUP, reply.final_delivery.entry_id)

    def run(self, stopping) -> None:
        """Loop ``step`` until ``stopping`` (a ``threading.Event``) is set."""
        while not stopping.is_set():
            try:
                self.step()
            except Exception:
                log.exception("delivery step failed")
                stopping.wait(1.0)


def record_usage(tenant: Tenant, event: Event) -> None:
    """Store one ``Usage`` row per LLM call reported in the event's ``usage``.

    ``usage`` is ``{"model", "input_tokens", "output_tokens", "cost_cents", "latency_ms"}``,
    optionally with ``"calls": [same shape, ...]`` (one entry per LLM call of the turn).
    """
    usage = event.usage or {}
    calls = usage.get("calls") or ([usage] if usage.get("model") else [])
    if Usage.select().where(Usage.envelope_id == event.message_id).exists():
        return
    for call in calls:
        Usage.create(tenant=tenant, envelope_id=event.message_id, model=str(call.get("model", "")),
                     input_tokens=int(call.get("input_tokens") or 0),
                     output_tokens=int(call.get("output_tokens") or 0),
                     cost_cents=float(call.get("cost_cents") or 0.0),
                     latency_ms=int(call.get("latency_ms") or 0))
