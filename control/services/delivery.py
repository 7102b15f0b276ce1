"""Delivery: agent events → chat messages, throttled, and recorded in a delivery ledger.

The first text of a reply is sent with ``sendMessage``; later deltas edit that message with
``editMessageText`` at most once per ``edit_interval`` seconds per chat (Telegram limits bots
to about one message per second per chat: https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this);
a 429 answer's ``retry_after`` pauses that chat.  The ``final`` event is acknowledged on the bus
only after Telegram confirmed the final text and the ledger says ``delivered``, so a restart
never resends a delivered reply and always finishes an undelivered one.

No duplicate after a crash between Telegram accepting ``sendMessage`` and the ledger write.
The Bot API has no idempotency key for ``sendMessage``, so the worker writes a send intent
first (``Delivery.pending_text``, plus ``pending_after``: the highest message id of the chat
it knows, at least the id of the user's message being answered) and clears it once the new
message id is recorded.  Finding an intent left behind (the worker died, or the request timed
out with Telegram's answer unknown), it looks for the message before sending again: message
ids in a chat are sequential and shared by the user's and the bot's messages, so a message
sent then has an id above ``pending_after``.  Each candidate id not already in the ledger is
probed with ``editMessageText`` carrying the intended text: "message is not modified" means
the bot's message there shows exactly that text (ours, adopted); "message can't be edited" is
a user's message; "message to edit not found" is a free (or deleted) id, and
``PROBE_MISSES`` of those in a row end the search, after which the text is sent.

Limits (honest ones):
* Telegram applies an edit whose text differs, so the probe is harmless only on our own
  message, the user's messages and free ids.  A bot message recorded nowhere (the ledger,
  or the conversation log ``Message`` with its platform id) that lies between
  ``pending_after`` and the lost message is overwritten with the reply text and adopted as
  the reply; the lost message, further up, then shows the same text too (the user sees the
  reply twice and loses that bot message).  Today only the control plane's own answers
  (``/help``, linking, sent by ``control.tasks.send_text``) are recorded nowhere, and they
  land in that window only when the user sends a command while the worker is down.  An
  attention item ``delivery_probe_edited`` records every such adoption.
* A bot message with the very same text is taken for ours (what the user sees is the same).
* More than ``PROBE_MISSES - 1`` deleted messages in a row right above ``pending_after``, or
  more than ``PROBE_LIMIT`` messages in the chat since, end the search early: the reply is
  then sent again (a duplicate is possible, never a loss).
* Telegram answers "message to edit not found" also for messages too old to be edited; a
  crash recovered days later sends a new message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from control.channels.telegram import BotApiClient, BotApiError
from control.models import Delivery, Message, Tenant, Usage, utcnow
from control.services.attention import raise_attention
from wire.bus import Bus
from wire.errors import MalformedMessage
from wire.protocol import DELIVERY_GROUP, Event, events_stream

log = logging.getLogger(__name__)

# Telegram's maximum message length in characters (https://core.telegram.org/bots/api#sendmessage).
TELEGRAM_MAX_TEXT = 4096
TYPING_INTERVAL = 4.0  # seconds; a chat action shows for about 5 s.
TRANSIENT_BACKOFF = 2.0  # seconds before retrying a chat after a transport or 5xx error.
PROBE_MISSES = 3  # consecutive "message to edit not found" answers ending a recovery search.
PROBE_LIMIT = 50  # candidate message ids examined at most by one recovery search.
KNOWN_ID_ROWS = 20  # newest ledger rows of a chat read to find its highest known message id.


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
        tenant_ids: returns the ids of tenants whose events to consume; called at most once
            per ``tenant_refresh`` seconds.
        edit_interval: minimum seconds between sends/edits in one chat.
        consumer: this worker's consumer name in the ``delivery`` group.
        clock: monotonic clock in seconds.
        tenant_refresh: seconds between two ``tenant_ids`` calls (a new tenant's replies wait
            at most that long).
    """

    def __init__(self, bus: Bus, client: BotApiClient, tenant_ids: Callable[[], list[int]], *,
                 edit_interval: float = 1.0, consumer: str = "control",
                 clock: Callable[[], float] = time.monotonic, tenant_refresh: float = 1.0):
        self.bus = bus
        self.client = client
        self.tenant_ids = tenant_ids
        self.edit_interval = edit_interval
        self.consumer = consumer
        self.clock = clock
        self.tenant_refresh = tenant_refresh
        self.pending: dict[str, PendingReply] = {}
        self.chats: dict[str, ChatClock] = {}
        self._streams: list[str] = []
        self._streams_at: float | None = None

    def step(self, block: float = 0.2) -> int:
        """Read available events, then flush due sends.

        Waits for events up to ``block`` seconds, or less when a pending reply falls due
        sooner (so a throttled chat neither waits longer than it must nor spins the loop).
        Returns the number of events read.
        """
        streams = self._event_streams()
        due_in = self._next_due() - self.clock()
        wait = max(0.0, min(block, due_in))
        if streams:
            deliveries = self.bus.read(streams, DELIVERY_GROUP, self.consumer, count=100, block=wait)
        else:
            deliveries = []
            time.sleep(wait)  # no tenant yet: idle instead of spinning
        for delivery in deliveries:
            self._take(delivery)
        self.flush()
        return len(deliveries)

    def _event_streams(self) -> list[str]:
        now = self.clock()
        if self._streams_at is None or now - self._streams_at >= self.tenant_refresh:
            self._streams = [events_stream(str(t)) for t in self.tenant_ids()]
            self._streams_at = now
        return self._streams

    def _next_due(self) -> float:
        """Monotonic time at which the earliest pending send or edit may happen (inf: none)."""
        due = float("inf")
        for reply in self.pending.values():
            if reply.final or reply.text != reply.sent_text:
                clock = self.chats.get(reply.event.chat_id)
                due = min(due, clock.next_send_at if clock else 0.0)
        return due

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
            ledger, message_id, shown = self._post(ledger, event, chunks[0])
            ledger.platform_message_id, ledger.last_text, ledger.pending_text = message_id, shown, None
            if shown != chunks[0] or len(chunks) > 1 or not reply.final:
                ledger.save()  # the id is on record before any further call to Telegram
        if chunks[0] != ledger.last_text:
            self.client.edit_message_text(event.chat_id, ledger.platform_message_id, chunks[0])
            ledger.last_text = chunks[0]
        if reply.final:
            if len(chunks) > 1:
                ledger.save()
                self._send_continuations(ledger, chunks[1:])
            ledger.recovered = reply.sent_text == "" and reply.final_delivery.attempts > 1
            ledger.state, ledger.delivered_at = "delivered", utcnow()
        ledger.save()
        reply.sent_text = reply.text

    def _send_continuations(self, ledger: Delivery, chunks: list[str]) -> None:
        """Send the chunks of a long reply after its first message, each exactly once."""
        sent = _chunk_ids(ledger)
        for chunk in chunks[len(sent):]:
            ledger, message_id, shown = self._post(ledger, None, chunk)
            sent.append(message_id)
            ledger.chunk_message_ids, ledger.pending_text = ",".join(sent), None
            ledger.save()
            if shown != chunk:
                self.client.edit_message_text(ledger.chat_id, message_id, chunk)

    def _post(self, ledger: Delivery | None, event: Event | None,
              text: str) -> tuple[Delivery, str, str]:
        """Put ``text`` in a new message of the reply's chat, unless an earlier send did.

        The send intent is written first (creating the ledger row from ``event`` when
        ``ledger`` is None, in the same write).

        Returns:
            ``(ledger, platform message id, text it shows)``; the text differs from ``text``
            when an earlier send of another text (an older delta) was found.  The caller
            records the id and clears ``pending_text``.

        Raises:
            BotApiError: Telegram refused (the intent is cleared: nothing was sent) or could
                not be reached (the intent stays, so the next attempt searches first).
        """
        if ledger is None:
            ledger = _open_ledger(event, text)
        elif ledger.pending_text is not None and (found := self._find_sent(ledger)) is not None:
            return ledger, found, ledger.pending_text
        else:
            ledger.pending_text = text
            ledger.pending_after = _highest_known_id(ledger.chat_id, ledger.reply_to)
            ledger.save()
        try:
            return ledger, self.client.send_message(ledger.chat_id, text), text
        except BotApiError as exc:
            if exc.error_code:  # Telegram answered, so it created no message
                ledger.pending_text = None
                ledger.save()
            raise

    def _find_sent(self, ledger: Delivery) -> str | None:
        """Return the id of the message an interrupted send created, or None (module docstring)."""
        if ledger.pending_after is None:
            log.warning("reply %s: no known message id to search from; sending again",
                        ledger.envelope_id)
            return None
        known = _known_ids(ledger.chat_id) | _logged_ids(ledger.chat_id)
        candidate, misses = int(ledger.pending_after), 0
        for _ in range(PROBE_LIMIT):
            candidate += 1
            if candidate in known:
                misses = 0
                continue
            outcome = self._probe(ledger.chat_id, candidate, ledger.pending_text)
            if outcome in ("match", "edited"):
                log.info("reply %s: found the message sent before the restart: %s (%s)",
                         ledger.envelope_id, candidate, outcome)
                if outcome == "edited":
                    raise_attention("delivery_probe_edited", ledger.envelope_id,
                                    f"chat {ledger.chat_id}: message {candidate} was not in the "
                                    "ledger and now shows the reply")
                return str(candidate)
            misses = misses + 1 if outcome == "missing" else 0
            if misses >= PROBE_MISSES:
                break
        return None

    def _probe(self, chat_id: str, message_id: int, text: str) -> str:
        """Edit ``message_id`` to ``text``: ``match`` | ``edited`` | ``missing`` | ``other``.

        Raises:
            BotApiError: anything but a 400 answer (429, 5xx, transport): retried later.
        """
        try:
            self.client.call("editMessageText", chat_id=chat_id, message_id=message_id, text=text)
        except BotApiError as exc:
            if exc.error_code != 400:
                raise
            description = str(exc)
            if "not modified" in description:
                return "match"
            return "missing" if "not found" in description else "other"
        return "edited"

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


def _open_ledger(event: Event, pending_text: str) -> Delivery:
    """Create the ledger row of a reply with its first send intent (one write)."""
    inbound = Message.get_or_none(Message.envelope_id == event.message_id, Message.direction == "in")
    reply_to = inbound.platform_message_id if inbound else None
    return Delivery.create(envelope_id=event.message_id, tenant=int(event.tenant),
                           channel=event.channel, chat_id=event.chat_id, reply_to=reply_to,
                           pending_text=pending_text,
                           pending_after=_highest_known_id(event.chat_id, reply_to))


def _chunk_ids(ledger: Delivery) -> list[str]:
    return [i for i in ledger.chunk_message_ids.split(",") if i]


def _known_ids(chat_id: str, newest: int | None = None) -> set[int]:
    """Return the platform ids of the messages of ``chat_id`` the ledger knows.

    ``newest`` limits the search to that many most recent ledger rows (ids grow with time in
    a chat, so the newest rows hold the highest ids).
    """
    ids: set[int] = set()
    rows = (Delivery.select(Delivery.platform_message_id, Delivery.chunk_message_ids, Delivery.reply_to)
            .where(Delivery.chat_id == chat_id).order_by(Delivery.id.desc()).limit(newest))
    for row in rows:
        for value in (row.platform_message_id, row.reply_to, *_chunk_ids(row)):
            if value is not None and str(value).isdigit():
                ids.add(int(value))
    return ids


def _logged_ids(chat_id: str) -> set[int]:
    """Return the platform ids the conversation log holds for ``chat_id`` (both directions)."""
    rows = Message.select(Message.platform_message_id).where(
        Message.chat_id == chat_id, Message.platform_message_id.is_null(False))
    return {int(row.platform_message_id) for row in rows if row.platform_message_id.isdigit()}


def _highest_known_id(chat_id: str, reply_to: str | None) -> str | None:
    """The highest message id of ``chat_id`` known now: any new message's id is above it."""
    known = _known_ids(chat_id, newest=KNOWN_ID_ROWS)
    if reply_to is not None and reply_to.isdigit():
        known.add(int(reply_to))
    return str(max(known)) if known else None


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
