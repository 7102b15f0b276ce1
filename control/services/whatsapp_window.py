"""WhatsApp's 24-hour customer-service window, per user.

A business may send free-form messages to a user only within 24 hours of the user's last
message to it; afterwards only approved templates
(https://developers.facebook.com/docs/whatsapp/cloud-api/guides/send-messages#customer-service-windows).
The webhook records the time of every inbound message (``record_inbound``); the adapter asks
``in_window`` before each send and falls back to the template outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from peewee import EXCLUDED

from control.models import WhatsAppWindow, utcnow

WINDOW = timedelta(hours=24)


def record_inbound(wa_id: str, at: datetime | None = None) -> None:
    """Note that ``wa_id`` wrote to the business at ``at`` (default now, UTC); never moves back.

    One upsert statement (atomic on its own; the webhook runs it in its routing transaction so
    the ack pays for one commit).
    """
    (WhatsAppWindow.insert(wa_id=wa_id, last_inbound_at=at or utcnow())
     .on_conflict(conflict_target=[WhatsAppWindow.wa_id],
                  preserve=[WhatsAppWindow.last_inbound_at],
                  where=WhatsAppWindow.last_inbound_at < EXCLUDED.last_inbound_at)
     .execute())


def in_window(wa_id: str, now: Callable[[], datetime] = utcnow) -> bool:
    """True while ``wa_id``'s last message is less than 24 hours old."""
    row = WhatsAppWindow.get_or_none(WhatsAppWindow.wa_id == wa_id)
    return row is not None and now() - row.last_inbound_at < WINDOW
