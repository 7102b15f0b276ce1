"""Delivery: agent events → chat messages, throttled, and recorded in a delivery ledger.

Every platform is reached through its ``control.channels.base.ChannelAdapter``, chosen by the
event's ``channel`` (Telegram: ``TelegramAdapter``; Discord: ``DiscordAdapter``; Slack: its
adapter); an event for a channel without an adapter stays unacknowledged and is logged.  The
first text of a reply is sent (``send``), or edits the message the platform already holds for
it (``existing_message``: Discord's deferred interaction response); later deltas edit that
message at most once per edit interval per chat (the adapter's ``limits.min_edit_interval``,
or ``edit_interval`` for all; Telegram allows about one message per second per chat:
https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this); a rate
limit's ``retry_after`` pauses that chat.  The ``final`` event is acknowledged on the bus only
after the platform confirmed the final text (returned its message id) and the ledger says
``delivered``, so a restart never resends a delivered reply and always finishes an
undelivered one.  The ledger row records the channel of each reply.

A crash between the platform accepting a send and the ledger write never shows the user a
second reply where the platform lets us look (``ChannelAdapter.find_sent``, given the ids
already recorded for the chat; the send intent: ``control.services.delivery_recovery``) or
dedupes sends (Discord's message nonce).

Replies on the ``web`` channel (the dashboard's quick chat) go through the same path; its
adapter (``control.channels.web.WebAdapter``) calls nothing: the ledger this worker writes at
every send and edit is where the dashboard's event stream reads them (``web_chat``), unthrottled.

Events on the ``api`` channel answer Jobs API jobs (issue 23): ``control.services.jobs``
records them (result, cost, dependents released) and they are acknowledged, never sent.

Lifecycle events (the agent's ``ready``/``heartbeat``/``failed``) are not replies: they go to
``control.services.machine_health`` and are acknowledged once recorded, never sent to a chat.

A tenant VM is untrusted (issue #19).  The tenant of an event is the one whose events stream
it was read from, never the event's ``tenant`` field; every event passes
``control.services.event_guard.check_event`` (its tenant, its message id, its chat) before it
touches a chat, a machine or a row, and pending replies are kept per tenant.  A refused event
is dead-lettered (``hermes:events:{tenant}:dead``) with the reason, counted
(``hermes_bus_dead_letters``, ``control.web.metrics``) and raised as an ``event_rejected``
attention item.  One bad event fails alone: an exception while taking an event leaves it for
a retry and dead-letters it at its ``TAKE_ATTEMPTS``-th delivery; any exception but a
``ChannelError`` while sending a reply marks the reply failed, dead-letters its final and
raises a ``delivery_failed`` attention item; the worker goes on with the other replies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from control.channels.base import ChannelAdapter, ChannelError
from control.channels.base import split_text as split_to_limit
from control.channels.telegram_adapter import TELEGRAM_LIMITS
from control.db import write_transaction
from control.errors import MisroutedEvent
from control.models import Delivery, DeliveryState, Job, Message, Tenant, utcnow
from control.services import event_guard, jobs, machine_health, notices
from control.services.attention import raise_attention
from control.services.delivery_recovery import (
    chunk_ids,
    highest_known_id,
    open_ledger,
    recorded_ids,
)
from control.services.usage import record_usage
from wire import logs
from wire.bus import Bus
from wire.bus import Delivery as BusDelivery
from wire.errors import MalformedMessage
from wire.protocol import API_CHANNEL, DELIVERY_GROUP, LIFECYCLE, Event, events_stream

log = logging.getLogger(__name__)

TELEGRAM_MAX_TEXT = TELEGRAM_LIMITS.max_text
TYPING_INTERVAL = 4.0  # seconds; a chat action shows for about 5 s.
TRANSIENT_BACKOFF = 2.0  # seconds before retrying a chat after a transport or 5xx error.
# Deliveries of one event that raised while being taken before it is dead-lettered: a few
# tries ride out a passing database error, and a poison event never comes back forever.
TAKE_ATTEMPTS = 3


@dataclass
class PendingReply:
    """A reply being delivered: the tenant (of its events stream), the newest text and, once
    final, the bus entry to ack."""

    tenant_id: int
    event: Event
    text: str
    final: bool = False
    final_delivery: BusDelivery | None = None
    sent_text: str = ""


@dataclass
class ChatClock:
    """When a chat may next be sent to or edited (monotonic seconds)."""

    next_send_at: float = 0.0
    next_typing_at: float = 0.0


def split_text(text: str, limit: int = TELEGRAM_MAX_TEXT) -> list[str]:
    """Split ``text`` into chunks of at most ``limit`` characters, preferring line breaks
    (``control.channels.base.split_text``)."""
    return split_to_limit(text, limit)


class DeliveryWorker:
    """Consumes every ready tenant's events stream and delivers replies through channel adapters.

    Args:
        bus: the bus.
        adapters: every platform's adapter by channel name (``{"telegram":
            TelegramAdapter(...), "discord": DiscordAdapter(...)}``, ``ControlTasks.adapters``);
            an event of a channel without one waits for a worker that has it.
        tenant_ids: returns the ids of tenants whose events to consume; called at most once
            per ``tenant_refresh`` seconds.
        edit_interval: minimum seconds between sends/edits in one chat, for every channel;
            None takes each adapter's ``limits.min_edit_interval``.
        consumer: this worker's consumer name in the ``delivery`` group.
        clock: monotonic clock in seconds.
        tenant_refresh: seconds between two ``tenant_ids`` calls (a new tenant's replies wait
            at most that long).
        on_ready: called with the tenant id after its agent's lifecycle ``ready`` was recorded
            (``ControlTasks.agent_ready``: its MCP configuration is sent again).
        send_notice: the ``send_notice`` task for the user notices of lifecycle events (ready,
            failed); None sends them from this worker through ``adapters``.
        on_jobs_ended: called with the Jobs API jobs an ``api``-channel event ended
            (``ControlTasks.queue_job_callbacks``); None: no callbacks are queued.
    """

    def __init__(self, bus: Bus, adapters: dict[str, ChannelAdapter],
                 tenant_ids: Callable[[], list[int]], *,
                 edit_interval: float | None = None, consumer: str = "control",
                 clock: Callable[[], float] = time.monotonic, tenant_refresh: float = 1.0,
                 on_ready: Callable[[int], object] | None = None,
                 send_notice: notices.Send | None = None,
                 on_jobs_ended: Callable[[list[Job]], object] | None = None):
        self.bus = bus
        self.on_jobs_ended = on_jobs_ended
        self.adapters = dict(adapters)
        self.tenant_ids = tenant_ids
        self.edit_interval = edit_interval
        self.consumer = consumer
        self.clock = clock
        self.tenant_refresh = tenant_refresh
        self.on_ready = on_ready
        self.send_notice = send_notice
        # Keyed by (tenant id, message id): one tenant's ids never touch another's reply.
        self.pending: dict[tuple[int, str], PendingReply] = {}
        self.chats: dict[str, ChatClock] = {}
        self._streams: list[str] = []
        self._stream_tenants: dict[str, int] = {}
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
            try:
                self._take(delivery)
            except Exception as exc:  # noqa: BLE001 - one event must not stop the others
                self._take_failed(delivery, exc)
        self.flush()
        return len(deliveries)

    def _event_streams(self) -> list[str]:
        now = self.clock()
        if self._streams_at is None or now - self._streams_at >= self.tenant_refresh:
            ids = [int(t) for t in self.tenant_ids()]
            self._streams = [events_stream(str(t)) for t in ids]
            # The tenant of each stream, by our own naming; never read from an event.
            self._stream_tenants.update(zip(self._streams, ids, strict=True))
            self._streams_at = now
        return self._streams

    def _next_due(self) -> float:
        """Monotonic time at which the earliest pending send or edit may happen (inf: none)."""
        due = float("inf")
        for reply in self.pending.values():
            if reply.final or reply.text != reply.sent_text:
                clock = self.chats.get(_chat_key(reply.event))
                due = min(due, clock.next_send_at if clock else 0.0)
        return due

    def _interval(self, adapter: ChannelAdapter) -> float:
        if not adapter.limits.throttled:
            return 0.0
        return adapter.limits.min_edit_interval if self.edit_interval is None else self.edit_interval

    def _take(self, delivery: BusDelivery) -> None:
        tenant_id = self._stream_tenants[delivery.stream]
        with logs.bound(tenant=str(tenant_id)):
            try:
                event = Event.from_json(delivery.payload)
            except MalformedMessage as exc:
                self._reject(delivery, tenant_id, f"malformed event: {exc}")
                return
            try:
                event_guard.check_event(tenant_id, event)
            except MisroutedEvent as exc:
                self._reject(delivery, tenant_id, f"{exc.code}: {exc}")
                return
            if event.kind == LIFECYCLE:  # its message_id is its own, not an envelope's
                self._take_event(tenant_id, event, delivery)
                return
            with logs.bound(envelope_id=event.message_id):
                self._take_event(tenant_id, event, delivery)

    def _reject(self, delivery: BusDelivery, tenant_id: int, reason: str) -> None:
        """Dead-letter an event that must not be acted on, and tell the operators."""
        log.error("dead-lettering event %s of tenant %s: %s", delivery.entry_id, tenant_id, reason)
        self.bus.dead_letter(delivery, DELIVERY_GROUP, reason)
        raise_attention("event_rejected", str(tenant_id),
                        f"an event on {delivery.stream} was refused and dead-lettered: {reason}"[:1000])

    def _take_failed(self, delivery: BusDelivery, exc: Exception) -> None:
        """An event raised while being taken: leave it for a retry, or dead-letter it for good."""
        if delivery.attempts < TAKE_ATTEMPTS:
            log.warning("event %s on %s failed (attempt %d of %d), will retry: %r", delivery.entry_id,
                        delivery.stream, delivery.attempts, TAKE_ATTEMPTS, exc)
            return
        log.error("event %s on %s failed %d times, dead-lettering it: %r", delivery.entry_id,
                  delivery.stream, delivery.attempts, exc)
        self.bus.dead_letter(delivery, DELIVERY_GROUP, f"failed {delivery.attempts} times: {exc!r}")
        raise_attention("event_failed", delivery.stream,
                        f"event {delivery.entry_id} failed {delivery.attempts} times and was "
                        f"dead-lettered: {exc!r}"[:1000])

    def _take_event(self, tenant_id: int, event: Event, delivery: BusDelivery) -> None:
        """Act on an event ``event_guard.check_event`` accepted for tenant ``tenant_id``."""
        if event.kind == LIFECYCLE:
            machine = machine_health.record_lifecycle(tenant_id, event, self._tell)
            if machine is not None and event.lifecycle == "ready" and self.on_ready is not None:
                self.on_ready(tenant_id)
            self.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)
            return
        if event.channel == API_CHANNEL:  # a Jobs API job's answer: recorded, never sent
            ended = jobs.take_event(tenant_id, event, self.bus)
            if ended and self.on_jobs_ended is not None:
                self.on_jobs_ended(ended)
            self.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)
            return
        ledger = _ledger(tenant_id, event.message_id)
        if ledger is not None and ledger.state == DeliveryState.DELIVERED:
            self.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)
            return
        if event.channel not in self.adapters:
            # Left unacknowledged: a worker configured for that channel (or this one after a
            # restart with its settings) delivers it.
            log.error("no adapter for channel %r; reply %s waits", event.channel, event.message_id)
            return
        key = (tenant_id, event.message_id)
        if event.kind == "status":
            self._typing(event, key in self.pending)
        elif event.kind == "delta":
            reply = self.pending.get(key)
            if reply is None:
                self.pending[key] = PendingReply(tenant_id, event, event.text)
            elif not reply.final:
                reply.text = event.text
        else:
            reply = self.pending.setdefault(key, PendingReply(tenant_id, event, event.text))
            reply.event, reply.text, reply.final, reply.final_delivery = event, event.text, True, delivery
            return
        self.bus.ack(delivery.stream, DELIVERY_GROUP, delivery.entry_id)

    def _tell(self, channel: str, identity: str, text: str) -> None:
        """Tell a linked person a notice (machine ready/failed, ``notices.tell``): queued on
        ``send_notice`` when the worker has it (retried, off the delivery loop), else sent
        here once; a refusal or an unreachable platform is then logged, not retried."""
        if self.send_notice is not None:
            self.send_notice(channel, identity, text)
            return
        adapter = self.adapters.get(channel)
        if adapter is None:
            log.error("no %s adapter: notice to %s dropped", channel, identity)
            return
        try:
            notices.send_direct(adapter, identity, text)
        except ChannelError as exc:
            log.error("could not tell %s %s %r: %s", channel, identity, text, exc)

    def _typing(self, event: Event, replying: bool) -> None:
        adapter = self.adapters[event.channel]
        clock = self.chats.setdefault(_chat_key(event), ChatClock())
        now = self.clock()
        if not adapter.limits.typing or now < clock.next_typing_at or replying:
            return
        clock.next_typing_at = now + TYPING_INTERVAL
        try:
            adapter.typing(event.chat_id)
        except ChannelError as exc:
            log.info("typing indicator failed for %s chat %s: %s", event.channel, event.chat_id, exc)

    def flush(self) -> None:
        """Send or edit every pending reply whose chat is due.

        A reply whose sending raises anything but a ``ChannelError`` fails alone
        (``_send_failed``); the others are still sent.
        """
        for key in list(self.pending):
            reply = self.pending[key]
            with logs.bound(tenant=str(reply.tenant_id), envelope_id=reply.event.message_id):
                try:
                    self._flush_one(key, reply)
                except Exception as exc:  # noqa: BLE001 - one reply must not stop the others
                    self._send_failed(key, reply, exc)

    def _flush_one(self, key: tuple[int, str], reply: PendingReply) -> None:
        clock = self.chats.setdefault(_chat_key(reply.event), ChatClock())
        if self.clock() < clock.next_send_at:
            return
        if reply.text == reply.sent_text and not reply.final:
            return
        adapter = self.adapters[reply.event.channel]
        if not reply.final and not adapter.limits.can_edit:
            return  # a platform that cannot edit gets the final text only
        try:
            self._send(reply, adapter)
        except ChannelError as exc:
            self._on_error(key, reply, clock, exc)
            return
        clock.next_send_at = self.clock() + self._interval(adapter)
        if reply.final:
            self._complete(reply)
            del self.pending[key]

    def _send_failed(self, key: tuple[int, str], reply: PendingReply, exc: Exception) -> None:
        """Mark a reply whose sending raised unexpectedly failed, dead-letter its final (if
        read yet) and drop it, so it is never retried in front of the others."""
        event = reply.event
        log.error("reply %s to %s chat %s failed: %r", event.message_id, event.channel,
                  event.chat_id, exc, exc_info=exc)
        reason = f"delivery failed: {exc!r}"[:1000]
        self.pending.pop(key, None)
        Delivery.update(state=DeliveryState.FAILED.value, failure=reason).where(
            (Delivery.tenant == reply.tenant_id) & (Delivery.envelope_id == event.message_id)
            & (Delivery.state != DeliveryState.DELIVERED.value)).execute()
        raise_attention("delivery_failed", event.message_id,
                        f"tenant {reply.tenant_id}, {event.channel} chat {event.chat_id}: {reason}")
        if reply.final_delivery is not None:
            self.bus.dead_letter(reply.final_delivery, DELIVERY_GROUP, reason)

    def _send(self, reply: PendingReply, adapter: ChannelAdapter) -> None:
        event = reply.event
        ledger = _ledger(reply.tenant_id, event.message_id)
        chunks = (adapter.split(reply.text) if reply.final
                  else [reply.text[:adapter.limits.max_text]])
        existing = adapter.existing_message(event.chat_id)
        if existing is not None and (ledger is None or ledger.platform_message_id is None):
            ledger = ledger or open_ledger(reply.tenant_id, event, None)
            ledger.platform_message_id = existing
            ledger.save()
        if ledger is None or ledger.platform_message_id is None:
            ledger, message_id, shown = self._post(adapter, ledger, (reply.tenant_id, event), chunks[0])
            ledger.platform_message_id, ledger.last_text, ledger.pending_text = message_id, shown, None
            if shown != chunks[0] or len(chunks) > 1 or not reply.final:
                ledger.save()  # the id is on record before any further call to the platform
        if chunks[0] != ledger.last_text:
            adapter.edit(event.chat_id, ledger.platform_message_id, chunks[0])
            ledger.last_text = chunks[0]
        if reply.final:
            if len(chunks) > 1:
                ledger.save()
                self._send_continuations(adapter, ledger, chunks[1:])
            ledger.recovered = (reply.sent_text == "" and reply.final_delivery is not None
                                and reply.final_delivery.attempts > 1)
            ledger.state, ledger.delivered_at = DeliveryState.DELIVERED, utcnow()
            # "delivered" short-circuits a redelivered final (``_take_event``), so the reply's
            # conversation-log row and its usage must commit with it or not at all.
            with write_transaction():
                ledger.save()
                _record_reply(reply.tenant_id, reply.event, reply.text, ledger)
        else:
            ledger.save()
        reply.sent_text = reply.text

    def _send_continuations(self, adapter: ChannelAdapter, ledger: Delivery,
                            chunks: list[str]) -> None:
        """Send the chunks of a long reply after its first message, each exactly once."""
        sent = chunk_ids(ledger)
        for chunk in chunks[len(sent):]:
            ledger, message_id, shown = self._post(adapter, ledger, None, chunk)
            sent.append(message_id)
            ledger.chunk_message_ids, ledger.pending_text = ",".join(sent), None
            ledger.save()
            if shown != chunk:
                adapter.edit(ledger.chat_id, message_id, chunk)

    def _post(self, adapter: ChannelAdapter, ledger: Delivery | None,
              reply_of: tuple[int, Event] | None, text: str) -> tuple[Delivery, str, str]:
        """Put ``text`` in a new message of the reply's chat, unless an earlier send did.

        The send intent is written first (creating the ledger row of ``reply_of``, ``(tenant
        id, event)``, when ``ledger`` is None, in the same write).

        Returns:
            ``(ledger, platform message id, text it shows)``; the text differs from ``text``
            when an earlier send of another text (an older delta) was found.  The caller
            records the id and clears ``pending_text``.

        Raises:
            ChannelError: the platform refused (the intent is cleared: nothing was sent) or
                could not be reached (the intent stays, so the next attempt searches first).
        """
        if ledger is None:
            if reply_of is None:
                raise ValueError("the first message of a reply needs its event")
            ledger = open_ledger(*reply_of, text)
        elif ledger.pending_text is not None and (
                found := adapter.find_sent(ledger, recorded_ids(ledger.chat_id))) is not None:
            return ledger, found, ledger.pending_text
        else:
            ledger.pending_text = text
            ledger.pending_after = highest_known_id(ledger.chat_id, ledger.reply_to)
            ledger.save()
        try:
            return ledger, adapter.send(ledger.chat_id, text, ledger.reply_to), text
        except ChannelError as exc:
            if exc.answered:  # the platform answered, so it created no message
                ledger.pending_text = None
                ledger.save()
            raise

    def _on_error(self, key: tuple[int, str], reply: PendingReply, clock: ChatClock,
                  exc: ChannelError) -> None:
        event = reply.event
        if exc.rate_limited:
            clock.next_send_at = self.clock() + float(exc.retry_after or 1)
            log.info("%s chat %s rate limited for %ss", event.channel, event.chat_id, exc.retry_after)
        elif exc.message_gone:
            Delivery.update(platform_message_id=None).where(
                (Delivery.tenant == reply.tenant_id) & (Delivery.envelope_id == event.message_id)).execute()
        elif exc.permanent:
            log.error("reply %s to chat %s refused: %s", event.message_id, event.chat_id, exc)
            raise_attention("delivery_refused", event.message_id, f"chat {event.chat_id}: {exc}")
            # Recorded as failed with the platform's reason, so nothing shows it as sent.
            Delivery.update(state=DeliveryState.FAILED.value, failure=str(exc)[:1000]).where(
                (Delivery.tenant == reply.tenant_id) & (Delivery.envelope_id == event.message_id)
                & (Delivery.state != DeliveryState.DELIVERED.value)).execute()
            if reply.final:
                self._ack_final(reply)
            del self.pending[key]
        else:
            clock.next_send_at = self.clock() + TRANSIENT_BACKOFF
            log.warning("delivery to chat %s failed, will retry: %s", event.chat_id, exc)

    def _complete(self, reply: PendingReply) -> None:
        event = reply.event
        self._ack_final(reply)
        log.info("reply delivered to %s chat %s", event.channel, event.chat_id)

    def _ack_final(self, reply: PendingReply) -> None:
        if reply.final_delivery is not None:
            self.bus.ack(reply.final_delivery.stream, DELIVERY_GROUP, reply.final_delivery.entry_id)

    def run(self, stopping) -> None:
        """Loop ``step`` until ``stopping`` (a ``threading.Event``) is set."""
        while not stopping.is_set():
            try:
                self.step()
            except Exception:
                log.exception("delivery step failed")
                stopping.wait(1.0)


def _ledger(tenant_id: int, envelope_id: str) -> Delivery | None:
    """The ledger row of tenant ``tenant_id``'s reply ``envelope_id``, if there is one."""
    return Delivery.get_or_none((Delivery.tenant == tenant_id) & (Delivery.envelope_id == envelope_id))


def _record_reply(tenant_id: int, event: Event, text: str, ledger: Delivery) -> None:
    """Log the delivered reply in the conversation (``Message``, direction ``out``) and store
    its LLM usage, both for tenant ``tenant_id`` (its events stream's) and idempotent on the
    envelope id.  Nothing when the tenant is gone."""
    tenant = Tenant.get_or_none(Tenant.id == tenant_id)
    if tenant is None:
        return
    Message.get_or_create(envelope_id=event.message_id, direction="out",
                          defaults={"tenant": tenant, "channel": event.channel,
                                    "chat_id": event.chat_id, "text": text,
                                    "platform_message_id": ledger.platform_message_id})
    record_usage(tenant, event)


def _chat_key(event: Event) -> str:
    """The throttle key of a chat: chat ids are only unique within their platform."""
    return f"{event.channel}:{event.chat_id}"
