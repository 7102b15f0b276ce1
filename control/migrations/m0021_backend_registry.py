"""Backend registry and spend by goal and job (issue 23): ``llmcall`` gains ``reason`` (why the
agent's router chose the backend, default ``''``), ``usage`` gains ``goal_id`` and ``job_id``
(nullable), and the new table ``llmbackendhealth`` holds the last health probe of each LLM
gateway provider route (``api`` unique).
"""

from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, IntegerField, Model

from control.migrations import add_column_if_absent


class _Base(Model):
    pass


class LlmBackendHealth(_Base):
    api = CharField(unique=True)
    ok = BooleanField()
    status = IntegerField()
    latency_ms = IntegerField()
    detail = CharField()
    checked_at = DateTimeField()
    last_ok_at = DateTimeField(null=True)


def upgrade(migrator, database) -> None:
    """Add the columns when absent and create ``llmbackendhealth`` when absent (``safe``)."""
    add_column_if_absent(migrator, database, "llmcall", "reason", CharField(default=""))
    add_column_if_absent(migrator, database, "usage", "goal_id", IntegerField(null=True))
    add_column_if_absent(migrator, database, "usage", "job_id", CharField(null=True))
    with database.bind_ctx([LlmBackendHealth]):
        database.create_tables([LlmBackendHealth], safe=True)
