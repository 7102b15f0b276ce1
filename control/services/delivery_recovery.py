"""Send intents of the delivery ledger: what a search for a lost reply starts from.

No duplicate after a crash between a platform accepting a send and the ledger write.  The
delivery worker writes a send intent first (``Delivery.pending_text``, plus ``pending_after``:
the highest platform id of the chat it knows, at least the id of the user's message being
answered) and clears it once the new message's id is recorded.  Finding an intent left behind
(the worker died, or the request timed out with the answer unknown), it asks the adapter to
look for the message (``ChannelAdapter.find_sent``) with the ids already recorded for the chat
(``recorded_ids``), before sending again.

``pending_after`` is a platform id that orders messages in time, by platform:

* Telegram: a message id (an integer, sequential per chat; ``control.channels.telegram_recovery``);
* Discord: a snowflake (an integer that grows with its creation time,
  https://discord.com/developers/docs/reference#snowflakes; ``control.channels.discord``);
* Slack: a message ``ts`` (``"1595926230.009600"``: Unix seconds, "the unique (per-channel)
  timestamp", https://docs.slack.dev/reference/events/message; ``control.channels.slack``).

Ids of other shapes (``@original``, a Slack ``trigger_id``, a Discord thread message
``<thread>:<message>``, WhatsApp's ``wamid.``) do not order and are left out; with none known
``pending_after`` is None and each adapter bounds its search by the ledger row's ``created_at``.
"""

from __future__ import annotations

import re
from decimal import Decimal

from control.models import Delivery, Message
from control.services.attention import raise_attention
from control.services.event_guard import Checked
from wire.protocol import Event

KNOWN_ID_ROWS = 20  # newest ledger rows of a chat read to find its highest known message id.
# A Telegram message id, a Discord snowflake or a Slack ts: digits, optionally ".digits".
_ORDERED_ID = re.compile(r"\d+(?:\.\d+)?")


def open_ledger(tenant_id: int, event: Event, pending_text: str | None,
                checked: Checked | None = None) -> Delivery:
    """Create the ledger row of tenant ``tenant_id``'s reply ``event`` with its first send
    intent (one write); the tenant is the one whose events stream the event came from.
    ``checked``: what ``event_guard.check_event`` read for the event, when the caller has it
    (its ``inbound`` is then not looked up again)."""
    if checked is not None:
        inbound = checked.inbound
    else:
        inbound = Message.get_or_none(Message.envelope_id == event.message_id,
                                      Message.direction == "in", Message.tenant == tenant_id)
    reply_to = inbound.platform_message_id if inbound else None
    return Delivery.create(envelope_id=event.message_id, tenant=tenant_id,
                           channel=event.channel, chat_id=event.chat_id, reply_to=reply_to,
                           pending_text=pending_text,
                           pending_after=highest_known_id(event.chat_id, reply_to))


def chunk_ids(ledger: Delivery) -> list[str]:
    """Return the ids of a long reply's continuation messages."""
    return [i for i in ledger.chunk_message_ids.split(",") if i]


def recorded_ids(chat_id: str) -> frozenset[str]:
    """Return every platform message id the control plane recorded for ``chat_id``: the
    ledger's (reply messages, continuations, the messages answered) and the conversation log's
    (both directions, the control plane's own answers included)."""
    logged = Message.select(Message.platform_message_id).where(
        Message.chat_id == chat_id, Message.platform_message_id.is_null(False))
    return frozenset(_ledger_ids(chat_id) | {str(row.platform_message_id) for row in logged})


def highest_known_id(chat_id: str, reply_to: str | None) -> str | None:
    """The highest ordered platform id of ``chat_id`` known now (module docstring): any message
    sent from now on has a higher one.  None when no id of the chat orders."""
    known = _ledger_ids(chat_id, newest=KNOWN_ID_ROWS) | {reply_to or ""}
    ordered = [value for value in known if _ORDERED_ID.fullmatch(value)]
    return max(ordered, key=Decimal) if ordered else None


def report_overwrite(ledger: Delivery, message_id: str) -> None:
    """Tell the operators that a recovery probe overwrote a bot message recorded nowhere
    (``control.channels.telegram_recovery``, first limit): a ``delivery_probe_edited`` item."""
    raise_attention("delivery_probe_edited", ledger.envelope_id,
                    f"chat {ledger.chat_id}: message {message_id} was not in the ledger and now "
                    "shows the reply")


def _ledger_ids(chat_id: str, newest: int | None = None) -> set[str]:
    """Return the platform ids the ledger holds for ``chat_id``; ``newest`` limits the search
    to that many most recent rows (ids grow with time in a chat)."""
    ids: set[str] = set()
    rows = (Delivery.select(Delivery.platform_message_id, Delivery.chunk_message_ids, Delivery.reply_to)
            .where(Delivery.chat_id == chat_id).order_by(Delivery.id.desc()).limit(newest))
    for row in rows:
        ids.update(str(v) for v in (row.platform_message_id, row.reply_to, *chunk_ids(row))
                   if v is not None)
    return ids
