"""The dashboard's quick chat: the ``web`` channel (issue #10).

A message is published like every other channel's: an ``Envelope`` (channel ``web``, chat id
``web-<tenant id>``) on the tenant's messages stream, with its inbound ``Message`` row in the
same transaction (``control.services.routing`` does the same for Telegram).  The agent's reply
comes back through the delivery worker, which for ``web`` stores it in the delivery ledger
(``control.services.delivery``); ``reply_events`` turns that ledger row into server-sent events
(https://html.spec.whatwg.org/multipage/server-sent-events.html) by polling it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from control.channels import web as web_channel
from control.db import write_transaction
from control.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from control.models import Delivery, DeliveryState, Machine, MachineState, Message, Tenant
from control.services import lifecycle
from control.services.routing import tenant_preferences
from wire import logs
from wire.bus import Bus
from wire.errors import BusUnavailable
from wire.protocol import Envelope, messages_stream, new_id

log = logging.getLogger(__name__)

CHANNEL = web_channel.CHANNEL
MAX_CHARS = 4000
"""Longest message accepted (characters); about Telegram's 4096, so both channels take the same."""

POLL_INTERVAL = 0.15  # seconds between two reads of the ledger: a delta shows within ~0.2 s.
HEARTBEAT_INTERVAL = 15.0  # seconds; a comment line keeps proxies from closing an idle stream.
STREAM_TIMEOUT = 120.0  # seconds; a reply not stored by then ends the stream with an error.
RETRY_MS = 2000  # the browser's reconnection delay (SSE ``retry:`` field), milliseconds.
TIMEOUT_TEXT = "No reply yet. It will appear in the conversation when your agent answers."


def chat_id(tenant: Tenant) -> str:
    """Return the web chat id of ``tenant`` (one conversation per tenant, ``channels.web``)."""
    return web_channel.chat_id(tenant.id)


def send(tenant: Tenant, text: str, bus: Bus) -> Envelope:
    """Publish ``text`` from the tenant's dashboard to their agent.

    Args:
        tenant: the signed-in user's tenant.
        text: the message (surrounding whitespace is dropped).
        bus: the control plane's bus.

    Returns:
        The published envelope (its ``id`` names the reply's event stream).

    Raises:
        BadRequest: empty or longer than ``MAX_CHARS``.
        Conflict: the tenant is paused or its machine is not ready.
        ServiceUnavailable: the bus could not be reached (nothing was recorded).
    """
    text = (text or "").strip()
    if not text:
        raise BadRequest("Write a message first.", code="empty_message")
    if len(text) > MAX_CHARS:
        raise BadRequest(f"Messages are limited to {MAX_CHARS} characters (this has {len(text)}).",
                         code="message_too_long")
    if lifecycle.is_paused(tenant):
        raise Conflict("Your agent is paused because your subscription ended; resubscribe to chat.",
                       code="paused")
    machine = Machine.get_or_none(Machine.tenant == tenant)
    if machine is None or machine.state != MachineState.READY:
        raise Conflict("Your agent is not ready yet; the dashboard shows its state.", code="not_ready")
    chat = chat_id(tenant)
    envelope = Envelope(id=new_id(), tenant=str(tenant.id),
                        channel=CHANNEL, chat_id=chat, sender_id=f"account-{tenant.id}", text=text,
                        request_id=logs.current("request_id"), preferences=tenant_preferences(tenant))
    try:
        with write_transaction():
            Message.insert(envelope_id=envelope.id, direction="in", tenant=tenant, channel=CHANNEL,
                           chat_id=chat, text=text).on_conflict_ignore().execute()
            bus.append(messages_stream(envelope.tenant), envelope.to_json(), idempotency_key=envelope.id)
    except BusUnavailable as exc:
        log.warning("web chat message not published: %s", exc)
        raise ServiceUnavailable("Your message could not be sent just now; please try again.") from exc
    with logs.bound(tenant=envelope.tenant, envelope_id=envelope.id):
        log.info("web chat message published for the agent")
    return envelope


def history(tenant: Tenant, limit: int = 50) -> list[Message]:
    """Return the last ``limit`` messages of the tenant's web conversation, oldest first."""
    rows = (Message.select()
            .where((Message.tenant == tenant) & (Message.channel == CHANNEL)
                   & (Message.chat_id == chat_id(tenant)))
            .order_by(Message.created_at.desc(), Message.id.desc()).limit(limit))
    return list(reversed(rows))


def check_envelope(tenant: Tenant, envelope_id: str) -> None:
    """Raise ``NotFound`` unless ``envelope_id`` is a web message of ``tenant``."""
    exists = (Message.select(Message.id)
              .where((Message.envelope_id == envelope_id) & (Message.direction == "in")
                     & (Message.tenant == tenant) & (Message.channel == CHANNEL)).exists())
    if not exists:
        raise NotFound("No such message.")


@dataclass(frozen=True)
class ReplyState:
    """The stored reply so far: ``text`` and whether it is ``final`` (delivered)."""

    text: str
    final: bool


def reply_state(envelope_id: str) -> ReplyState | None:
    """Return the reply to ``envelope_id`` as the delivery ledger holds it, or None (none yet)."""
    row = (Delivery.select(Delivery.last_text, Delivery.state)
           .where(Delivery.envelope_id == envelope_id).first())
    if row is None:
        return None
    return ReplyState(row.last_text, row.state == DeliveryState.DELIVERED)


def reply_events(read: Callable[[], ReplyState | None], *, poll: float = POLL_INTERVAL,
                 heartbeat: float = HEARTBEAT_INTERVAL, timeout: float = STREAM_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[str]:
    """Yield the reply as server-sent events until it is final or ``timeout`` passes.

    Events: ``retry:`` first; ``event: delta`` with ``{"text": <the reply so far>}`` whenever
    the stored text changes; ``event: final`` with ``{"text": <the whole reply>}``, then the
    stream ends; ``event: error`` with ``{"message": ...}`` after ``timeout`` seconds without
    a final.  A comment line every ``heartbeat`` seconds of silence.

    Args:
        read: returns the current ``ReplyState`` or None (``reply_state`` bound to an id).
        poll, heartbeat, timeout: seconds.
        clock, sleep: monotonic time and sleep (injectable).
    """
    started = last_sent = clock()
    yield f"retry: {RETRY_MS}\n\n"
    shown = ""
    while True:
        state = read()
        if state is not None and state.final:
            yield _event("final", {"text": state.text})
            return
        if state is not None and state.text and state.text != shown:
            shown = state.text
            last_sent = clock()
            yield _event("delta", {"text": shown})
        now = clock()
        if now - started >= timeout:
            yield _event("error", {"message": TIMEOUT_TEXT})
            return
        if now - last_sent >= heartbeat:
            last_sent = now
            yield ": heartbeat\n\n"
        sleep(poll)


def _event(name: str, data: dict) -> str:
    """One SSE event; the data is a single JSON line, so newlines in the text are safe."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"
