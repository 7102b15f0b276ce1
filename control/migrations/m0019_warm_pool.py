"""The warm pool (issue 22): new table ``poolserver``, one row per pre-booted server.

Columns as ``control.models.PoolServer``: ``provider_id`` and ``token_hash`` unique, ``tenant``
nullable and unique (a tenant never claims two), ``state`` indexed (the claim's lookup).
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, ForeignKeyField, Model, TextField


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class PoolServer(_Base):
    plan = CharField()
    location = CharField(default="")
    snapshot = CharField(default="")
    provider_id = CharField(unique=True)
    token_hash = CharField(unique=True)
    state = CharField(default="available", index=True)
    tenant = ForeignKeyField(Tenant, null=True, unique=True)
    sealed_env = TextField(null=True)
    address = CharField(null=True)
    created_at = DateTimeField()
    booted_at = DateTimeField(null=True)
    claimed_at = DateTimeField(null=True)
    configured_at = DateTimeField(null=True)
    updated_at = DateTimeField()


def upgrade(migrator, database) -> None:
    """Create ``poolserver`` with its indexes when absent (``safe``)."""
    with database.bind_ctx([Tenant, PoolServer]):
        database.create_tables([PoolServer], safe=True)
