"""Crash recovery of replies: find a message Telegram accepted before the ledger knew its id.

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
  reply twice and loses that bot message).  The control plane's own answers (``/help``,
  linking) are logged with their ids by ``control.tasks.send_text``, so only a bot message
  sent from outside this control plane can be hit.  An
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

from control.channels.telegram import BotApiClient, BotApiError
from control.models import Delivery, Message
from control.services.attention import raise_attention
from wire.protocol import Event

log = logging.getLogger(__name__)

PROBE_MISSES = 3  # consecutive "message to edit not found" answers ending a recovery search.
PROBE_LIMIT = 50  # candidate message ids examined at most by one recovery search.
KNOWN_ID_ROWS = 20  # newest ledger rows of a chat read to find its highest known message id.


class SentMessageFinder:
    """Looks for the message an interrupted ``sendMessage`` created (module docstring).

    Args:
        client: the Bot API client used to probe candidate ids.
    """

    def __init__(self, client: BotApiClient):
        self.client = client

    def find(self, ledger: Delivery) -> str | None:
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
            outcome = self.probe(ledger.chat_id, candidate, ledger.pending_text or "")
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

    def probe(self, chat_id: str, message_id: int, text: str) -> str:
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


def open_ledger(tenant_id: int, event: Event, pending_text: str | None) -> Delivery:
    """Create the ledger row of tenant ``tenant_id``'s reply ``event`` with its first send
    intent (one write); the tenant is the one whose events stream the event came from."""
    inbound = Message.get_or_none(Message.envelope_id == event.message_id, Message.direction == "in",
                                  Message.tenant == tenant_id)
    reply_to = inbound.platform_message_id if inbound else None
    return Delivery.create(envelope_id=event.message_id, tenant=tenant_id,
                           channel=event.channel, chat_id=event.chat_id, reply_to=reply_to,
                           pending_text=pending_text,
                           pending_after=highest_known_id(event.chat_id, reply_to))


def chunk_ids(ledger: Delivery) -> list[str]:
    """Return the ids of a long reply's continuation messages."""
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
        for value in (row.platform_message_id, row.reply_to, *chunk_ids(row)):
            if value is not None and str(value).isdigit():
                ids.add(int(value))
    return ids


def _logged_ids(chat_id: str) -> set[int]:
    """Return the platform ids the conversation log holds for ``chat_id`` (both directions)."""
    rows = Message.select(Message.platform_message_id).where(
        Message.chat_id == chat_id, Message.platform_message_id.is_null(False))
    return {int(pid) for row in rows if (pid := row.platform_message_id) and pid.isdigit()}


def highest_known_id(chat_id: str, reply_to: str | None) -> str | None:
    """The highest message id of ``chat_id`` known now: any new message's id is above it."""
    known = _known_ids(chat_id, newest=KNOWN_ID_ROWS)
    if reply_to is not None and reply_to.isdigit():
        known.add(int(reply_to))
    return str(max(known)) if known else None
