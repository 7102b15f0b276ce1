"""Budget warnings (issue 23): new table ``budgetwarning``.

One row per tenant and UTC day on which the 80 % warning of the plan's daily LLM budget was
sent: ``tenant``, ``day`` (unique together, so only one of several workers sends it),
``spent_cents`` (the spend that crossed) and ``sent_at``.
"""

from __future__ import annotations

from peewee import DateField, DateTimeField, FloatField, ForeignKeyField, Model


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class BudgetWarning(_Base):
    tenant = ForeignKeyField(Tenant)
    day = DateField()
    spent_cents = FloatField()
    sent_at = DateTimeField()

    class Meta:
        indexes = ((("tenant", "day"), True),)


def upgrade(migrator, database) -> None:
    """Create ``budgetwarning`` with its unique index when absent (``safe``)."""
    with database.bind_ctx([Tenant, BudgetWarning]):
        database.create_tables([BudgetWarning], safe=True)
