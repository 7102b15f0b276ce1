"""WhatsApp (issue #12): platform delivery statuses and the 24-hour customer-service window.

``delivery`` gains ``platform_status`` (the latest status callback the platform sent for the
reply: WhatsApp's ``sent``, ``delivered``, ``read`` or ``failed``; null until one arrives) and
``failure`` (why a reply was not delivered, ``""`` otherwise; its ``state`` is then
``failed``).  New table ``whatsappwindow``: per user ``wa_id`` (unique), ``last_inbound_at``,
the time of the user's last message (the window is open for 24 hours after it).
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, Model, TextField

from control.migrations import add_column_if_absent


class WhatsAppWindow(Model):
    wa_id = CharField(unique=True)
    last_inbound_at = DateTimeField()


def upgrade(migrator, database) -> None:
    """Add the two ``delivery`` columns and create ``whatsappwindow`` when absent."""
    add_column_if_absent(migrator, database, "delivery", "platform_status", CharField(null=True))
    add_column_if_absent(migrator, database, "delivery", "failure", TextField(default=""))
    with database.bind_ctx([WhatsAppWindow]):
        database.create_tables([WhatsAppWindow], safe=True)
