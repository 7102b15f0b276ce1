"""Jobs API: per-tenant API tokens and jobs (issue 23).

New tables ``apitoken`` (``token_hash`` unique: SHA-256 of the token; ``scopes``; the
encrypted callback signing secret ``secret_box``; ``revoked_at``) and ``job`` (``public_id``
and ``envelope_id`` unique; prompt, priority, budget, dependencies, callback, state, result,
cost; indexed on ``(tenant, state)`` and uniquely on ``(token, idempotency_key)``).
"""

from __future__ import annotations

from peewee import (
    CharField,
    DateTimeField,
    FloatField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class ApiToken(_Base):
    tenant = ForeignKeyField(Tenant)
    name = CharField()
    token_hash = CharField(unique=True)
    scopes = CharField()
    secret_box = TextField()
    created_at = DateTimeField()
    last_used_at = DateTimeField(null=True)
    revoked_at = DateTimeField(null=True)


class Job(_Base):
    tenant = ForeignKeyField(Tenant)
    token = ForeignKeyField(ApiToken, null=True)
    public_id = CharField(unique=True)
    envelope_id = CharField(unique=True)
    prompt = TextField()
    priority = IntegerField()
    budget_cents = FloatField()
    depends_on = TextField()
    callback_url = TextField(null=True)
    callback_state = CharField()
    idempotency_key = CharField(null=True)
    state = CharField()
    result = TextField()
    cost_cents = FloatField()
    created_at = DateTimeField()
    started_at = DateTimeField(null=True)
    finished_at = DateTimeField(null=True)

    class Meta:
        indexes = ((("tenant", "state"), False), (("token", "idempotency_key"), True))


def upgrade(migrator, database) -> None:
    """Create ``apitoken`` and ``job`` with their indexes when absent (``safe``)."""
    with database.bind_ctx([Tenant, ApiToken, Job]):
        database.create_tables([ApiToken, Job], safe=True)
