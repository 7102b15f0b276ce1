"""Machine history for the SLOs (issue 21): new table ``machineevent``.

One row per machine transition (``tenant``, ``kind``: provisioned | failed | down | up, ``at``
naive UTC), indexed by ``(kind, at)`` and ``(tenant, at)``.
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, ForeignKeyField, Model


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class MachineEvent(_Base):
    tenant = ForeignKeyField(Tenant)
    kind = CharField()
    at = DateTimeField()

    class Meta:
        indexes = ((("kind", "at"), False), (("tenant", "at"), False))


def upgrade(migrator, database) -> None:
    """Create ``machineevent`` with its indexes when absent (``safe``)."""
    with database.bind_ctx([Tenant, MachineEvent]):
        database.create_tables([MachineEvent], safe=True)
