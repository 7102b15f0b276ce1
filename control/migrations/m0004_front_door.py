"""Front door: web accounts, password resets, the mail outbox and tenant preferences (issue #10).

New tables ``account``, ``passwordreset`` and ``outboxmail``; ``tenant`` gains the user's
preferences (``timezone``, ``language``, ``model``) and the subscription lifecycle's
timestamps (``past_due_since``, ``grace_until``, ``paused_at``, ``archive_key``,
``archived_at``, ``deleted_at``), all nullable.
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, ForeignKeyField, IntegerField, Model, TextField

from control.migrations import add_column_if_absent


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class Account(_Base):
    tenant = ForeignKeyField(Tenant, unique=True)
    email = CharField(unique=True)
    password_hash = CharField()
    session_version = IntegerField(default=0)
    created_at = DateTimeField()
    last_login_at = DateTimeField(null=True)


class PasswordReset(_Base):
    account = ForeignKeyField(Account, on_delete="CASCADE")
    token_hash = CharField(unique=True)
    created_at = DateTimeField()
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


class OutboxMail(_Base):
    to_addr = CharField()
    subject = CharField()
    body = TextField()
    created_at = DateTimeField()
    sent_at = DateTimeField(null=True)
    attempts = IntegerField(default=0)
    error = TextField(default="")


TENANT_COLUMNS = {
    "timezone": CharField(null=True), "language": CharField(null=True),
    "model": CharField(null=True), "past_due_since": DateTimeField(null=True),
    "grace_until": DateTimeField(null=True), "paused_at": DateTimeField(null=True),
    "archive_key": CharField(null=True), "archived_at": DateTimeField(null=True),
    "deleted_at": DateTimeField(null=True),
}


def upgrade(migrator, database) -> None:
    """Add the tenant columns when absent and create the three tables (``safe``)."""
    for name, field in TENANT_COLUMNS.items():
        add_column_if_absent(migrator, database, "tenant", name, field)
    models = [Tenant, Account, PasswordReset, OutboxMail]
    with database.bind_ctx(models):
        database.create_tables(models[1:], safe=True)
