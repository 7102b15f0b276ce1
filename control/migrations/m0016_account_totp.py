"""Optional TOTP for users (issue 19): ``account`` gains ``totp_secret`` (nullable, the
RFC 6238 secret ``SecretsBox``-encrypted; null = TOTP off) and ``totp_last_step`` (the last
30-second step a code was accepted for, 0 = none).
"""

from __future__ import annotations

from peewee import IntegerField, TextField

from control.migrations import add_column_if_absent


def upgrade(migrator, database) -> None:
    """Add the two columns when absent."""
    add_column_if_absent(migrator, database, "account", "totp_secret", TextField(null=True))
    add_column_if_absent(migrator, database, "account", "totp_last_step", IntegerField(default=0))
