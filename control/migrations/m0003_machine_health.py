"""Machine health: the agent's ready deadline and last heartbeat (issue #9).

``machine`` gains ``boot_deadline_at`` (when a provisioning or booting machine's agent must
have reported ready) and ``last_heartbeat_at`` (the agent's last lifecycle event), both
nullable naive UTC.  The new states (``booting``, ``unhealthy``) need no schema change.
"""

from __future__ import annotations

from peewee import DateTimeField

from control.migrations import add_column_if_absent


def upgrade(migrator, database) -> None:
    """Add both columns when absent."""
    add_column_if_absent(migrator, database, "machine", "boot_deadline_at", DateTimeField(null=True))
    add_column_if_absent(migrator, database, "machine", "last_heartbeat_at", DateTimeField(null=True))
