"""The agent's version on the fleet page (issue 21): ``machine`` gains ``agent_version``
(nullable: the version the agent named in its last ``ready`` event, ``hermes-max X.Y.Z``)."""

from __future__ import annotations

from peewee import CharField

from control.migrations import add_column_if_absent


def upgrade(migrator, database) -> None:
    """Add the column when absent."""
    add_column_if_absent(migrator, database, "machine", "agent_version", CharField(null=True))
