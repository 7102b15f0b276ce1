"""Connections: a tenant's connected third-party services through Composio (issue #13).

New table ``connection``: ``tenant``, ``service`` (unique together), ``status``,
``composio_account_id`` (indexed), ``secret`` (encrypted API-key credentials), timestamps.
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class Connection(_Base):
    tenant = ForeignKeyField(Tenant)
    service = CharField()
    status = CharField(default="initiated")
    composio_account_id = CharField(null=True, index=True)
    secret = TextField(null=True)
    created_at = DateTimeField()
    updated_at = DateTimeField()

    class Meta:
        indexes = ((("tenant", "service"), True),)


def upgrade(migrator, database) -> None:
    """Create ``connection`` with its indexes when absent (``safe``)."""
    with database.bind_ctx([Tenant, Connection]):
        database.create_tables([Connection], safe=True)
