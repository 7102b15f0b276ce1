"""Events are confined to their stream: what an agent's event may do, and to whom (issue #19).

A tenant VM is untrusted (DESIGN.md, "Trust boundaries"): its agent writes the ``tenant``,
``channel``, ``chat_id`` and ``message_id`` of every event on ``hermes:events:{tenant}``, and
only the stream is ours to trust (its Redis ACL user may append to no other).  So the delivery
worker takes the tenant from the stream an event was read from and calls ``check_event``
before the event touches a chat, a machine or a row.  An event is refused when:

* ``foreign_tenant``: its body names another tenant than its stream's;
* ``foreign_reply``: its ``message_id`` is an envelope, ledger row or conversation-log row of
  another tenant (marking another tenant's reply delivered, or writing rows into it);
* ``other_chat``: it answers one of the tenant's own messages but names another chat than
  the one that message came from;
* ``chat_not_linked``: it answers no known message (a cron run, or an agent's own message)
  and names a chat that is not linked to the tenant now (``ChatIdentity``), nor the tenant's
  web chat.  On platforms where a linked identity is a user rather than a chat (Slack,
  Discord: ``InboundMessage.identity``) the chat must be one the tenant's user wrote to the
  agent from, while an identity of the tenant on that platform is still linked.

Once ``check_event`` passed, ``event.tenant`` equals the stream's tenant id exactly (string
equality), so code downstream may read it.  The caller dead-letters a refused event with the
reason, raises an ``event_rejected`` attention item and never acts on it.  ``prefetch`` reads the
rows ``check_event`` needs for a whole batch of events in two queries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from control.channels import web as web_channel
from control.errors import MisroutedEvent
from control.models import ChatIdentity, Delivery, Message
from wire.protocol import LIFECYCLE, Event

WEB_CHANNEL = web_channel.CHANNEL
# Platforms whose ``ChatIdentity`` is a user, not a chat (``InboundMessage.identity``).
USER_LINKED_CHANNELS = frozenset({"slack", "discord"})


def web_chat_id(tenant_id: int) -> str:
    """Return the web chat id of tenant ``tenant_id`` (``control.services.web_chat.chat_id``)."""
    return f"web-{tenant_id}"


@dataclass(frozen=True)
class Checked:
    """What ``check_event`` read about an accepted reply, for the caller to reuse: the
    tenant's inbound ``Message`` it answers and its ``Delivery`` ledger row (each None when
    there is none; always None for a lifecycle event)."""

    inbound: Message | None = None
    ledger: Delivery | None = None


@dataclass(frozen=True)
class Known:
    """The conversation-log and ledger rows of a batch of envelope ids, read in two queries
    (``prefetch``), by envelope id."""

    logged: dict[str, list[Message]]
    ledgers: dict[str, list[Delivery]]


PREFETCH_CHUNK = 500  # envelope ids per IN (...) list: well under any driver's parameter limit


def prefetch(envelope_ids: Iterable[str]) -> Known:
    """Read what ``check_event`` needs for every id of ``envelope_ids`` at once (the delivery
    worker's batch of events, issue 22): two queries per ``PREFETCH_CHUNK`` ids instead of two
    per event."""
    ids = sorted(set(envelope_ids))
    logged: dict[str, list[Message]] = {}
    ledgers: dict[str, list[Delivery]] = {}
    for start in range(0, len(ids), PREFETCH_CHUNK):
        chunk = ids[start:start + PREFETCH_CHUNK]
        for row in (Message.select(Message.envelope_id, Message.tenant, Message.direction, Message.channel,
                                   Message.chat_id, Message.platform_message_id)
                    .where(Message.envelope_id.in_(chunk))):
            logged.setdefault(row.envelope_id, []).append(row)
        for ledger in Delivery.select().where(Delivery.envelope_id.in_(chunk)):
            ledgers.setdefault(ledger.envelope_id, []).append(ledger)
    return Known(logged, ledgers)


def check_event(tenant_id: int, event: Event, *,
                linked: Callable[[int, str, str], bool] | None = None,
                known: Known | None = None) -> Checked:
    """Refuse ``event`` unless tenant ``tenant_id``, whose events stream it came from, may act on it.

    Lifecycle events need only name their stream's tenant; replies (``delta``, ``final``,
    ``error``, ``status``) must also pass the reply rules of the module docstring.  Two
    queries (the envelope id's conversation-log rows, its ledger rows), plus the chat's link
    when the reply answers no message.

    Args:
        tenant_id: the tenant of the stream the event was read from.
        event: the parsed event (``Event.from_json`` checked its types).
        linked: ``(tenant id, channel, chat id) -> bool`` deciding ``chat_not_linked``;
            None: ``chat_is_linked`` (the delivery worker passes a short-lived cache of it).
        known: the rows of the event's envelope id read by ``prefetch`` (covering it); None:
            they are read here.

    Returns:
        ``Checked``: the rows read on the way, so the caller need not read them again.

    Raises:
        MisroutedEvent: with ``code`` ``foreign_tenant``, ``foreign_reply``, ``other_chat`` or
            ``chat_not_linked`` and a message saying what was refused.
    """
    if event.tenant != str(tenant_id):
        raise MisroutedEvent(f"event names tenant {event.tenant!r:.40} but came from tenant "
                             f"{tenant_id}'s events stream", code="foreign_tenant")
    if event.kind == LIFECYCLE:
        return Checked()
    if known is None:
        known = prefetch([event.message_id])
    logged = known.logged.get(event.message_id, [])
    ledgers = known.ledgers.get(event.message_id, [])
    owners = {row.tenant_id for row in logged} | {row.tenant_id for row in ledgers}
    if owners - {tenant_id}:
        raise MisroutedEvent(f"message id {event.message_id!r:.60} belongs to another tenant",
                             code="foreign_reply")
    ledger = ledgers[0] if ledgers else None
    inbound = next((row for row in logged if row.direction == "in"), None)
    if inbound is not None:
        if (inbound.channel, inbound.chat_id) != (event.channel, event.chat_id):
            raise MisroutedEvent(
                f"reply to {inbound.channel} chat {inbound.chat_id}'s message names "
                f"{event.channel} chat {event.chat_id!r:.60}", code="other_chat")
        return Checked(inbound, ledger)
    if not (linked or chat_is_linked)(tenant_id, event.channel, event.chat_id):
        raise MisroutedEvent(f"{event.channel} chat {event.chat_id!r:.60} is not linked to "
                             f"tenant {tenant_id}", code="chat_not_linked")
    return Checked(None, ledger)


def linked_chats(chats: Iterable[tuple[int, str, str]]) -> set[tuple[int, str, str]]:
    """Those of ``chats``, ``(tenant id, channel, chat id)``, that are linked to their tenant by
    a ``ChatIdentity`` of that very chat: one query per ``PREFETCH_CHUNK`` chats.  A chat left
    out may still be linked another way (``chat_is_linked``: web chats, user-linked platforms)."""
    wanted = {chat for chat in chats if chat[1] != WEB_CHANNEL}
    ids = sorted({chat_id for _, _, chat_id in wanted})
    found: set[tuple[int, str, str]] = set()
    for start in range(0, len(ids), PREFETCH_CHUNK):
        rows = (ChatIdentity.select(ChatIdentity.tenant, ChatIdentity.channel, ChatIdentity.chat_id)
                .where(ChatIdentity.chat_id.in_(ids[start:start + PREFETCH_CHUNK])))
        found.update((row.tenant_id, row.channel, row.chat_id) for row in rows)
    return found & wanted


def chat_is_linked(tenant_id: int, channel: str, chat_id: str) -> bool:
    """True when tenant ``tenant_id`` may be written to in ``channel`` chat ``chat_id`` now.

    That is its web chat, a chat linked to it (``ChatIdentity``), or (``USER_LINKED_CHANNELS``,
    platforms that link users, not chats) a chat its user wrote to the agent from while an identity of the tenant
    on that platform is still linked.
    """
    if channel == WEB_CHANNEL:
        return chat_id == web_chat_id(tenant_id)
    mine = ChatIdentity.select().where((ChatIdentity.tenant == tenant_id)
                                       & (ChatIdentity.channel == channel))
    if mine.where(ChatIdentity.chat_id == chat_id).exists():
        return True
    if channel not in USER_LINKED_CHANNELS:
        return False
    wrote_from = Message.select().where(
        (Message.tenant == tenant_id) & (Message.direction == "in")
        & (Message.channel == channel) & (Message.chat_id == chat_id))
    return mine.exists() and wrote_from.exists()
