"""LLM gateway: per-tenant gateway tokens and metered calls (issue #19).

New tables ``llmtoken`` (``tenant`` unique, ``token_hash`` unique: SHA-256 of the tenant's
gateway token, ``issued_at``) and ``llmcall`` (one row per call through the gateway: ``api``,
``model``, ``status``, tokens, ``audio_seconds``, ``cost_cents``, ``latency_ms``,
``created_at``; indexed on ``(tenant, created_at)`` for today's spend).
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, FloatField, ForeignKeyField, IntegerField, Model


class _Base(Model):
    pass


class Tenant(_Base):
    class Meta:
        table_name = "tenant"


class LlmToken(_Base):
    tenant = ForeignKeyField(Tenant, unique=True)
    token_hash = CharField(unique=True)
    issued_at = DateTimeField()


class LlmCall(_Base):
    tenant = ForeignKeyField(Tenant)
    api = CharField()
    model = CharField()
    status = IntegerField()
    input_tokens = IntegerField()
    output_tokens = IntegerField()
    audio_seconds = FloatField()
    cost_cents = FloatField()
    latency_ms = IntegerField()
    created_at = DateTimeField()

    class Meta:
        indexes = ((("tenant", "created_at"), False),)


def upgrade(migrator, database) -> None:
    """Create ``llmtoken`` and ``llmcall`` with their indexes when absent (``safe``)."""
    with database.bind_ctx([Tenant, LlmToken, LlmCall]):
        database.create_tables([LlmToken, LlmCall], safe=True)
