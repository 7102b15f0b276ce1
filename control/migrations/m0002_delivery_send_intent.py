"""Delivery send intent and chunks; control-plane answers without a tenant (commit ebee162).

``delivery`` gains ``reply_to``, ``pending_text``, ``pending_after`` and
``chunk_message_ids`` (existing rows get ``""``) and an index on ``chat_id``;
``message.tenant_id`` becomes nullable so a reply to an unlinked chat can be logged.
"""

from __future__ import annotations

from peewee import CharField, TextField
from playhouse.migrate import migrate

from control.migrations import add_column_if_absent, add_index_if_absent


def upgrade(migrator, database) -> None:
    """Add the columns and index when absent; drop ``NOT NULL`` from ``message.tenant_id``."""
    add_column_if_absent(migrator, database, "delivery", "reply_to", CharField(null=True))
    add_column_if_absent(migrator, database, "delivery", "pending_text", TextField(null=True))
    add_column_if_absent(migrator, database, "delivery", "pending_after", CharField(null=True))
    add_column_if_absent(migrator, database, "delivery", "chunk_message_ids", TextField(default=""))
    add_index_if_absent(migrator, database, "delivery", ("chat_id",))
    tenant_column = next(c for c in database.get_columns("message") if c.name == "tenant_id")
    if not tenant_column.null:
        migrate(migrator.drop_not_null("message", "tenant_id"))
