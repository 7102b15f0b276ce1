"""Tenant preferences text: what the user tells their agent about themselves (issue #10).

``tenant`` gains ``preferences`` (free text up to 1000 characters, "about me / how to
answer", set on the dashboard's settings page; nullable).
"""

from __future__ import annotations

from peewee import TextField

from control.migrations import add_column_if_absent


def upgrade(migrator, database) -> None:
    """Add ``tenant.preferences`` when absent."""
    add_column_if_absent(migrator, database, "tenant", "preferences", TextField(null=True))
