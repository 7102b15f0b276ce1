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
reason, raises an ``event_rejected`` attention item and never acts on it.
"""

from __future__ import annotations

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


def check_event(tenant_id: int, event: Event) -> None:
    """Refuse ``event`` unless tenant ``tenant_id``, whose events stream it came from, may act on it.

    Lifecycle events need only name their stream's tenant; replies (``delta``, ``final``,
    ``error``, ``status``) must also pass the reply rules of the module docstring.

    Args:
        tenant_id: the tenant of the stream the event was read from.
        event: the parsed event (``Event.from_json`` checked its types).

    Raises:
        MisroutedEvent: with ``code`` ``foreign_tenant``, ``foreign_reply``, ``other_chat`` or
            ``chat_not_linked`` and a message saying what was refused.
    """
    if event.tenant != str(tenant_id):
        raise MisroutedEvent(f"event names tenant {event.tenant!r:.40} but came from tenant "
                             f"{tenant_id}'s events stream", code="foreign_tenant")
    if event.kind == LIFECYCLE:
        return
    _check_owner(tenant_id, event.message_id)
    inbound = Message.get_or_none((Message.envelope_id == event.message_id)
                                  & (Message.direction == "in"))
    if inbound is not None:
        if (inbound.channel, inbound.chat_id) != (event.channel, event.chat_id):
            raise MisroutedEvent(
                f"reply to {inbound.channel} chat {inbound.chat_id}'s message names "
                f"{event.channel} chat {event.chat_id!r:.60}", code="other_chat")
        return
    if not chat_is_linked(tenant_id, event.channel, event.chat_id):
        raise MisroutedEvent(f"{event.channel} chat {event.chat_id!r:.60} is not linked to "
                             f"tenant {tenant_id}", code="chat_not_linked")


def _check_owner(tenant_id: int, envelope_id: str) -> None:
    """Refuse an id another tenant's envelope, reply ledger or conversation log already uses."""
    for model in (Message, Delivery):
        owner = (model.select(model.tenant).where(model.envelope_id == envelope_id)
                 .tuples().first())
        if owner is not None and owner[0] != tenant_id:
            raise MisroutedEvent(f"message id {envelope_id!r:.60} belongs to another tenant",
                                 code="foreign_reply")


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
