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

Throughput (issue 22, ``bench/load.py --scenario 3``): due replies of different chats are sent
at once by ``concurrency`` threads (``HERMES_DELIVERY_CONCURRENCY``), each with a database
connection of its own; the replies of one chat are sent by one thread, in order, and ``flush``
returns only when every thread is done, so the worker's state is never changed by two steps at
once.  The rows ``event_guard`` needs are read for a whole batch of events in two queries and
reused by the step that read them (the ledger, the inbound message); a chat's link is
remembered for ``LINK_CACHE_SECONDS`` and a tenant's row for ``TENANT_CACHE_SECONDS``.
Several processes share the tenants with ``HERMES_DELIVERY_SHARD`` (``in_shard``), each under
a consumer name of its own (``consumer_name``); entries a dead consumer left unacknowledged are
claimed after the visibility timeout (``wire.redis_bus``, ``XAUTOCLAIM``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass

from control.channels.base import ChannelAdapter, ChannelError
from control.channels.base import split_text as split_to_limit
from control.channels.telegram_adapter import TELEGRAM_LIMITS
from control.db import database, write_transaction
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
from control.services.event_guard import Checked
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
# Seconds a chat found linked to its tenant is taken as linked without asking the database
# again: an unlinked chat may still get replies for this long (issue 22's round trips).
LINK_CACHE_SECONDS = 5.0
# Seconds a tenant's row is reused to log its replies; a tenant deleted meanwhile leaves
# ready_tenant_ids() within ``tenant_refresh`` anyway.
TENANT_CACHE_SECONDS = 5.0
# Events read per step at most, shared out over the streams (at most 100 per stream): a step
# flushes what it read before the next read, and a step longer than the visibility timeout
# would see its own unacknowledged finals claimed again (a few hundred replies/s per worker,
# bench/load.py --scenario 3, so about 10 s per full batch).
READ_BATCH = 2000


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
    # The rows event_guard read for the newest event, and the step that read them: reused by
    # that step's send only (later steps read the ledger again).
    checked: Checked | None = None
    checked_step: int = -1


@dataclass
class ChatClock:
    """When a chat may next be sent to or edited (monotonic seconds)."""

    next_send_at: float = 0.0
    next_typing_at: float = 0.0


def consumer_name() -> str:
    """This process's consumer name in the ``delivery`` group: ``<hostname>-<pid>``, unique
    per process, so two workers never share one consumer's pending entries (issue 22)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def in_shard(tenant_id: int, shard: tuple[int, int]) -> bool:
    """True when tenant ``tenant_id`` belongs to ``shard``, ``(i, n)`` with 0 <= i < n: its id
    modulo n is i (``HERMES_DELIVERY_SHARD``)."""
    index, count = shard
    return tenant_id % count == index


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
        concurrency: threads sending the due replies of different chats at once
            (``HERMES_DELIVERY_CONCURRENCY``); 1 sends them one at a time in this thread.
    """

    def __init__(self, bus: Bus, adapters: dict[str, ChannelAdapter],
                 tenant_ids: Callable[[], list[int]], *,
                 edit_interval: float | None = None, consumer: str = "control",
                 clock: Callable[[], float] = time.monotonic, tenant_refresh: float = 1.0,
                 on_ready: Callable[[int], object] | None = None,
                 send_notice: notices.Send | None = None,
                 on_jobs_ended: Callable[[list[Job]], object] | None = None,
                 concurrency: int = 1):
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
        self._steps = 0
        self._linked: dict[tuple[int, str, str], float] = {}  # chat → monotonic expiry
        self._tenants: dict[int, tuple[Tenant | None, float]] = {}  # tenant → (row, expiry)
        # Guards ``pending`` while flush threads remove the replies they finished.
        self._lock = threading.Lock()
        self._pool = (ThreadPoolExecutor(concurrency, thread_name_prefix="delivery-send")
                      if concurrency > 1 else None)

    def step(self, block: float = 0.2) -> int:
        """Read available events, then flush due sends.

        Waits for events up to ``block`` seconds, or less when a pending reply falls due
        sooner (so a throttled chat neither waits longer than it must nor spins the loop).
        Returns the number of events read.
        """
        self._steps += 1
        streams = self._event_streams()
        due_in = self._next_due() - self.clock()
        wait = max(0.0, min(block, due_in))
        if streams:
            count = max(1, min(100, READ_BATCH // len(streams)))
            deliveries = self.bus.read(streams, DELIVERY_GROUP, self.consumer, count=count, block=wait)
        else:
            deliveries = []
            time.sleep(wait)  # no tenant yet: idle instead of spinning
        known = self._prefetch(deliveries)
        for delivery in deliveries:
            try:
                self._take(delivery, known)
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

    def _prefetch(self, deliveries: list[BusDelivery]) -> event_guard.Known | None:
        """``event_guard.prefetch`` of the envelope ids of ``deliveries`` (two queries for the
        batch), and the links of the chats of those answering no message (one more, into the
        link cache); None when that failed, so each event reads its own rows and fails alone."""
        events: list[tuple[int, Event]] = []
        for delivery in deliveries:
            try:
                events.append((self._stream_tenants[delivery.stream], Event.from_json(delivery.payload)))
            except MalformedMessage:
                continue  # rejected when taken
        if not events:
            return None
        try:
            known = event_guard.prefetch(event.message_id for _, event in events)
            unanswered = {(tenant, event.channel, event.chat_id) for tenant, event in events
                          if event.kind != LIFECYCLE and not known.logged.get(event.message_id)}
            expiry = self.clock() + LINK_CACHE_SECONDS
            for chat in event_guard.linked_chats(unanswered):
                self._linked[chat] = expiry
        except Exception:  # the events are then taken one by one
            log.warning("prefetching %d events' rows failed", len(events), exc_info=True)
            return None
        return known

    def _take(self, delivery: BusDelivery, known: event_guard.Known | None = None) -> None:
        tenant_id = self._stream_tenants[delivery.stream]
        with logs.bound(tenant=str(tenant_id)):
            try:
                event = Event.from_json(delivery.payload)
            except MalformedMessage as exc:
                self._reject(delivery, tenant_id, f"malformed event: {exc}")
                return
            try:
                checked = event_guard.check_event(tenant_id, event, linked=self._chat_is_linked,
                                                  known=known)
            except MisroutedEvent as exc:
                self._reject(delivery, tenant_id, f"{exc.code}: {exc}")
                return
            if event.kind == LIFECYCLE:  # its message_id is its own, not an envelope's
                self._take_event(tenant_id, event, delivery, checked)
                return
            with logs.bound(envelope_id=event.message_id):
                self._take_event(tenant_id, event, delivery, checked)

    def _chat_is_linked(self, tenant_id: int, channel: str, chat_id: str) -> bool:
        """``event_guard.chat_is_linked``, a yes remembered for ``LINK_CACHE_SECONDS``."""
        key = (tenant_id, channel, chat_id)
        now = self.clock()
        if self._linked.get(key, 0.0) > now:
            return True
        if not event_guard.chat_is_linked(tenant_id, channel, chat_id):
            return False
        if len(self._linked) > 100_000:  # bounded: expired entries go all at once
            self._linked = {k: t for k, t in self._linked.items() if t > now}
        self._linked[key] = now + LINK_CACHE_SECONDS
        return True

    def _tenant(self, tenant_id: int) -> Tenant | None:
        """Tenant ``tenant_id``'s row (None: gone), read at most every ``TENANT_CACHE_SECONDS``."""
        now = self.clock()
        row, expiry = self._tenants.get(tenant_id, (None, 0.0))
        if expiry <= now:
            row = Tenant.get_or_none(Tenant.id == tenant_id)
            with self._lock:
                self._tenants[tenant_id] = (row, now + TENANT_CACHE_SECONDS)
        return row

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

    def _take_event(self, tenant_id: int, event: Event, delivery: BusDelivery, checked: Checked) -> None:
        """Act on an event ``event_guard.check_event`` accepted for tenant ``tenant_id``
        (``checked``: the rows it read)."""
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
        ledger = checked.ledger
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
                reply = self.pending[key] = PendingReply(tenant_id, event, event.text)
            elif not reply.final:
                reply.text = event.text
            reply.checked, reply.checked_step = checked, self._steps
        else:
            reply = self.pending.setdefault(key, PendingReply(tenant_id, event, event.text))
            reply.event, reply.text, reply.final, reply.final_delivery = event, event.text, True, delivery
            reply.checked, reply.checked_step = checked, self._steps
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
        """Send or edit every pending reply whose chat is due, and return when all are done.

        The chats are shared out to the worker's threads (module docstring); one chat's
        replies are handled by one thread, oldest first.  A reply whose sending raises anything
        but a ``ChannelError`` fails alone (``_send_failed``); the others are still sent.

        Raises:
            Exception: what ``_send_failed`` itself raised (the database is down), once every
                thread is done.
        """
        by_chat: dict[str, list[tuple[int, str]]] = {}
        for key, reply in self.pending.items():
            chat = _chat_key(reply.event)
            self.chats.setdefault(chat, ChatClock())  # created here: the threads only read chats
            by_chat.setdefault(chat, []).append(key)
        if self._pool is None or len(by_chat) < 2:
            for keys in by_chat.values():
                self._flush_chat(keys)
            return
        futures = [self._pool.submit(self._flush_chat_connected, keys) for keys in by_chat.values()]
        wait(futures)
        for future in futures:
            future.result()

    def _flush_chat_connected(self, keys: list[tuple[int, str]]) -> None:
        """``_flush_chat`` in a pool thread, on a database connection of its own (peewee's are
        per thread; a pooled one goes back to the pool after)."""
        with database.connection_context():
            self._flush_chat(keys)

    def _flush_chat(self, keys: list[tuple[int, str]]) -> None:
        """Send or edit the pending replies ``keys`` of one chat, in order."""
        for key in keys:
            reply = self.pending.get(key)
            if reply is None:
                continue
            with logs.bound(tenant=str(reply.tenant_id), envelope_id=reply.event.message_id):
                try:
                    self._flush_one(key, reply)
                except Exception as exc:  # noqa: BLE001 - one reply must not stop the others
                    self._send_failed(key, reply, exc)

    def _drop(self, key: tuple[int, str]) -> None:
        """Forget the pending reply ``key`` (done, refused or failed)."""
        with self._lock:
            self.pending.pop(key, None)

    def _flush_one(self, key: tuple[int, str], reply: PendingReply) -> None:
        clock = self.chats[_chat_key(reply.event)]
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
            self._drop(key)

    def _send_failed(self, key: tuple[int, str], reply: PendingReply, exc: Exception) -> None:
        """Mark a reply whose sending raised unexpectedly failed, dead-letter its final (if
        read yet) and drop it, so it is never retried in front of the others."""
        event = reply.event
        log.error("reply %s to %s chat %s failed: %r", event.message_id, event.channel,
                  event.chat_id, exc, exc_info=exc)
        reason = f"delivery failed: {exc!r}"[:1000]
        self._drop(key)
        Delivery.update(state=DeliveryState.FAILED.value, failure=reason).where(
            (Delivery.tenant == reply.tenant_id) & (Delivery.envelope_id == event.message_id)
            & (Delivery.state != DeliveryState.DELIVERED.value)).execute()
        raise_attention("delivery_failed", event.message_id,
                        f"tenant {reply.tenant_id}, {event.channel} chat {event.chat_id}: {reason}")
        if reply.final_delivery is not None:
            self.bus.dead_letter(reply.final_delivery, DELIVERY_GROUP, reason)

    def _send(self, reply: PendingReply, adapter: ChannelAdapter) -> None:
        event = reply.event
        checked = reply.checked if reply.checked_step == self._steps else None
        ledger = checked.ledger if checked is not None else _ledger(reply.tenant_id, event.message_id)
        chunks = (adapter.split(reply.text) if reply.final
                  else [reply.text[:adapter.limits.max_text]])
        existing = adapter.existing_message(event.chat_id)
        if existing is not None and (ledger is None or ledger.platform_message_id is None):
            ledger = ledger or open_ledger(reply.tenant_id, event, None, checked)
            ledger.platform_message_id = existing
            ledger.save()
        if ledger is None or ledger.platform_message_id is None:
            ledger, message_id, shown = self._post(adapter, ledger, (reply.tenant_id, event, checked),
                                                   chunks[0])
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
                _record_reply(self._tenant(reply.tenant_id), reply.event, reply.text, ledger)
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
              reply_of: tuple[int, Event, Checked | None] | None, text: str) -> tuple[Delivery, str, str]:
        """Put ``text`` in a new message of the reply's chat, unless an earlier send did.

        The send intent is written first (creating the ledger row of ``reply_of``, ``(tenant
        id, event, what event_guard read for it or None)``, when ``ledger`` is None,
        in the same write).

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
            ledger = open_ledger(*reply_of[:2], text, reply_of[2])
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
            self._drop(key)
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
        """Loop ``step`` until ``stopping`` (a ``threading.Event``) is set, then ``close``."""
        try:
            while not stopping.is_set():
                try:
                    self.step()
                except Exception:
                    log.exception("delivery step failed")
                    stopping.wait(1.0)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the send threads (after the flush under way, if any); idempotent."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _ledger(tenant_id: int, envelope_id: str) -> Delivery | None:
    """The ledger row of tenant ``tenant_id``'s reply ``envelope_id``, if there is one."""
    return Delivery.get_or_none((Delivery.tenant == tenant_id) & (Delivery.envelope_id == envelope_id))


def _record_reply(tenant: Tenant | None, event: Event, text: str, ledger: Delivery) -> None:
    """Log the delivered reply in the conversation (``Message``, direction ``out``) and store
    its LLM usage, both for ``tenant`` (its events stream's) and idempotent on the envelope id
    (the unique ``(envelope_id, direction)``: one ``INSERT ... ON CONFLICT DO NOTHING``).
    Nothing when the tenant is gone (None)."""
    if tenant is None:
        return
    Message.insert(envelope_id=event.message_id, direction="out", tenant=tenant,
                   channel=event.channel, chat_id=event.chat_id, text=text,
                   platform_message_id=ledger.platform_message_id).on_conflict_ignore().execute()
    record_usage(tenant, event)


def _chat_key(event: Event) -> str:
    """The throttle key of a chat: chat ids are only unique within their platform."""
    return f"{event.channel}:{event.chat_id}"
