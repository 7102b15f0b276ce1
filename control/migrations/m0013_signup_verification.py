"""Sign-up with a verified address (issue 19): new table ``signuprequest``.

A pending sign-up: ``email`` (indexed), ``password_hash`` (Argon2id), ``plan`` (nullable),
``token_hash`` (unique SHA-256 of the mailed link's token), ``created_at``, ``expires_at`` and
``used_at`` (nullable).  The account is created only when the link is used.
"""

from __future__ import annotations

from peewee import CharField, DateTimeField, Model


class SignupRequest(Model):
    email = CharField(index=True)
    password_hash = CharField()
    plan = CharField(null=True)
    token_hash = CharField(unique=True)
    created_at = DateTimeField()
    expires_at = DateTimeField()
    used_at = DateTimeField(null=True)


def upgrade(migrator, database) -> None:
    """Create ``signuprequest`` when absent."""
    with database.bind_ctx([SignupRequest]):
        database.create_tables([SignupRequest], safe=True)
