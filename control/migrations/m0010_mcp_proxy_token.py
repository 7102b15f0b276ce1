"""MCP proxy credential: each tenant's agent reaches Composio only through the control plane (issue #13).

``tenant`` gains ``mcp_token_hash`` (hex SHA-256 of the tenant's current proxy token, nullable:
no token while no connection is active) and ``mcp_upstream`` (the Composio session's MCP URL
and headers as JSON, encrypted with ``control.services.secrets_box``; nullable).
"""

from __future__ import annotations

from peewee import CharField, TextField

from control.migrations import add_column_if_absent


def upgrade(migrator, database) -> None:
    """Add ``tenant.mcp_token_hash`` and ``tenant.mcp_upstream`` when absent."""
    add_column_if_absent(migrator, database, "tenant", "mcp_token_hash", CharField(null=True))
    add_column_if_absent(migrator, database, "tenant", "mcp_upstream", TextField(null=True))
