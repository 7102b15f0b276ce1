"""WhatsApp status callbacks → the delivery ledger.

Meta reports each message the business sent as ``sent``, ``delivered``, ``read`` or ``failed``
(https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/components#statuses-object),
possibly out of order and more than once.  The reply whose message (or one of whose chunks) has
that wamid gets the status as ``Delivery.platform_status``; a status never moves back
(``read`` stays ``read`` when a late ``delivered`` arrives).  ``failed`` wins over everything:
the reply did not reach the user although the Graph API accepted it, so its ledger state
becomes ``failed`` with the error as ``failure`` and an operator attention item is raised:
nobody may believe it arrived.
"""

from __future__ import annotations

import logging

from pywa.types import MessageStatusType

from control.channels.whatsapp_inbound import StatusUpdate
from control.db import write_transaction
from control.errors import HermesError
from control.models import Delivery, DeliveryState, Message
from control.services.attention import raise_attention

log = logging.getLogger(__name__)

# A status only moves forward; ``played`` (voice notes) and unknown statuses are not tracked.
RANK: dict[str, int] = {MessageStatusType.SENT: 1, MessageStatusType.DELIVERED: 2, MessageStatusType.READ: 3,
        MessageStatusType.FAILED: 4}


class StatusNotMatched(HermesError):
    """No reply has the status's wamid yet: the status came before the delivery worker
    recorded the id the Graph API returned (Meta may send ``sent`` that early).  The
    ``record_whatsapp_status`` task raises it so Huey tries again later."""

    code = "status_not_matched"


def ledger_for(wamid: str) -> Delivery | None:
    """The reply whose first message or one of whose continuation chunks is ``wamid``."""
    row = Delivery.get_or_none((Delivery.channel == "whatsapp")
                               & (Delivery.platform_message_id == wamid))
    if row is None:
        row = (Delivery.select().where((Delivery.channel == "whatsapp")
                                       & Delivery.chunk_message_ids.contains(wamid)).first())
        if row is not None and wamid not in row.chunk_message_ids.split(","):
            row = None
    return row


def record_status(update: StatusUpdate) -> str:
    """Apply one status callback to the ledger.

    Returns:
        What happened: ``control`` (the wamid is a control-plane answer, which has no
        ledger), ``unknown`` (no reply has that wamid yet: the caller tries again later,
        since the delivery worker may not have recorded it yet), ``stale`` (an older status than the recorded one, or an
        unknown status name), ``recorded`` or ``failed``.
    """
    rank = RANK.get(update.status)
    with write_transaction():
        row = ledger_for(update.message_id)
        if row is None:
            control = Message.select().where((Message.channel == "whatsapp")
                                             & (Message.platform_message_id == update.message_id)
                                             & (Message.direction == "out")).exists()
            return "control" if control else "unknown"
        if rank is None or rank <= RANK.get(row.platform_status or "", 0):
            return "stale"
        row.platform_status = update.status
        if update.status == MessageStatusType.FAILED:
            row.state = DeliveryState.FAILED.value
            reason = update.error or "no reason given"
            row.failure = f"WhatsApp reported the message {update.message_id} failed: {reason}"
            raise_attention("whatsapp_failed", row.envelope_id,
                            f"chat {row.chat_id}: {row.failure}")
        row.save()
    if update.status == MessageStatusType.FAILED:
        log.error("WhatsApp reply %s was not delivered: %s", row.envelope_id, update.error)
        return "failed"
    return "recorded"
