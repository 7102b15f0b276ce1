"""Mission control (issue 21): operators, the audit trail and attention handling.

New tables ``operator`` (``email`` unique, ``role``, ``password_hash`` Argon2id,
``totp_secret`` encrypted, ``totp_last_step``, ``session_version``, ``created_at``,
``last_login_at``) and ``auditentry`` (append-only: ``actor``, ``role``, ``action`` indexed,
``target``, ``before``, ``after``, ``source``, ``created_at`` indexed).  ``attentionitem``
gains ``acknowledged_at``, ``acknowledged_by``, ``assignee``, ``snoozed_until``,
``resolved_by`` and ``resolution`` (all nullable).  Indexes for the overview's time-window
counts: ``message(created_at, direction, tenant_id)``, ``delivery(created_at, state)`` and
``llmcall(created_at, status)``.
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, IntegerField, Model, TextField

from control.migrations import add_column_if_absent, add_index_if_absent


class Operator(Model):
    email = CharField(unique=True)
    role = CharField()
    password_hash = CharField()
    totp_secret = TextField()
    totp_last_step = IntegerField(default=0)
    session_version = IntegerField(default=0)
    created_at = DateTimeField()
    last_login_at = DateTimeField(null=True)


class AuditEntry(Model):
    actor = CharField()
    role = CharField()
    action = CharField(index=True)
    target = CharField(default="")
    before = TextField(default="")
    after = TextField(default="")
    source = CharField(default="")
    created_at = DateTimeField(index=True)


_ATTENTION_COLUMNS = {
    "acknowledged_at": DateTimeField(null=True), "acknowledged_by": CharField(null=True),
    "assignee": CharField(null=True), "snoozed_until": DateTimeField(null=True),
    "resolved_by": CharField(null=True), "resolution": TextField(null=True),
}


def upgrade(migrator, database) -> None:
    """Create ``operator`` and ``auditentry`` when absent; add the attention columns."""
    with database.bind_ctx([Operator, AuditEntry]):
        database.create_tables([Operator, AuditEntry], safe=True)
    for name, field in _ATTENTION_COLUMNS.items():
        add_column_if_absent(migrator, database, "attentionitem", name, field)
    add_index_if_absent(migrator, database, "message", ("created_at", "direction", "tenant_id"))
    add_index_if_absent(migrator, database, "delivery", ("created_at", "state"))
    add_index_if_absent(migrator, database, "llmcall", ("created_at", "status"))
