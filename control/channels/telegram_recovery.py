"""Crash recovery on Telegram: find a message Telegram accepted before the ledger knew its id.

The Bot API has no idempotency key for ``sendMessage`` and no way for a bot to read a chat's
history, so the delivery worker's send intent (``Delivery.pending_text``, plus
``pending_after``: the highest message id of the chat it knew, at least the id of the user's
message being answered; ``control.services.delivery_recovery``) is searched for by probing.
Message ids in a chat are sequential and shared by the user's and the bot's messages, so a
message sent after the intent was written has an id above ``pending_after``.  Each candidate id
not already recorded (the ledger, or the conversation log ``Message``) is probed with
``editMessageText`` carrying the intended text (https://core.telegram.org/bots/api#editmessagetext):
"message is not modified" means the bot's message there shows exactly that text (ours,
adopted); "message can't be edited" is a user's message; "message to edit not found" is a free
(or deleted) id, and ``PROBE_MISSES`` of those in a row end the search, after which the text is
sent.

Limits (honest ones):
* Telegram applies an edit whose text differs, so the probe is harmless only on our own
  message, the user's messages and free ids.  A bot message recorded nowhere that lies between
  ``pending_after`` and the lost message is overwritten with the reply text and adopted as the
  reply; the lost message, further up, then shows the same text too (the user sees the reply
  twice and loses that bot message).  The control plane's own answers (``/help``, linking) are
  logged with their ids, so only a bot message sent from outside this control plane can be
  hit; every such adoption is reported through ``on_overwrite`` (the delivery worker raises a
  ``delivery_probe_edited`` attention item).
* A bot message with the very same text is taken for ours (what the user sees is the same).
* More than ``PROBE_MISSES - 1`` deleted messages in a row right above ``pending_after``, or
  more than ``PROBE_LIMIT`` messages in the chat since, end the search early: the reply is
  then sent again (a duplicate is possible, never a loss).
* Telegram answers "message to edit not found" also for messages too old to be edited; a
  crash recovered days later sends a new message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from control.channels.telegram import BotApiClient, BotApiError

log = logging.getLogger(__name__)

PROBE_MISSES = 3  # consecutive "message to edit not found" answers ending a recovery search.
PROBE_LIMIT = 50  # candidate message ids examined at most by one recovery search.

# ``on_overwrite(ledger, message id)``: a bot message recorded nowhere now shows the reply.
Overwrite = Callable[[Any, str], None]


class SentMessageFinder:
    """Looks for the message an interrupted ``sendMessage`` created (module docstring).

    Args:
        client: the Bot API client used to probe candidate ids.
        on_overwrite: called with the ledger row and the message id when the probe changed the
            text of a bot message that was recorded nowhere (the first limit in the module
            docstring); None: only logged.
    """

    def __init__(self, client: BotApiClient, on_overwrite: Overwrite | None = None):
        self.client = client
        self.on_overwrite = on_overwrite

    def find(self, ledger, recorded: frozenset[str]) -> str | None:
        """Return the id of the message an interrupted send created, or None.

        Args:
            ledger: the reply's ``Delivery`` row; ``pending_text`` is the text being sent,
                ``pending_after`` the message id the search starts above (None: no search).
            recorded: the platform ids the control plane recorded for the chat; they are
                skipped, never probed.

        Raises:
            BotApiError: any answer but a 400 (429, 5xx, transport): search again later.
        """
        if ledger.pending_after is None:
            log.warning("reply %s: no known message id to search from; sending again",
                        ledger.envelope_id)
            return None
        known = {int(value) for value in recorded if value.isdigit()}
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
                    log.warning("reply %s: message %s of chat %s was recorded nowhere and now "
                                "shows the reply", ledger.envelope_id, candidate, ledger.chat_id)
                    if self.on_overwrite is not None:
                        self.on_overwrite(ledger, str(candidate))
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
