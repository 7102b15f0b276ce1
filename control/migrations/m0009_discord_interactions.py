"""Discord interactions and gateway state: slash-command tokens and the Gateway's liveness (issue #11).

New table ``discordinteraction``: ``interaction_id`` (unique), ``application_id``, ``token``
(Fernet-encrypted, ``control.services.secrets_box``), ``ephemeral`` and ``created_at``
(a token lives 15 minutes; ``control.services.discord_interactions.prune`` deletes older rows).
New table ``gatewaystate``: per ``channel`` (unique), whether its Gateway session is
``connected`` and when it last said so (``seen_at``), for the channel watchdog.
"""

from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, Model, TextField


class DiscordInteraction(Model):
    interaction_id = CharField(unique=True)
    application_id = CharField()
    token = TextField()
    ephemeral = BooleanField(default=False)
    created_at = DateTimeField(index=True)


class GatewayState(Model):
    channel = CharField(unique=True)
    connected = BooleanField(default=False)
    seen_at = DateTimeField()


def upgrade(migrator, database) -> None:
    """Create ``discordinteraction`` and ``gatewaystate`` when absent."""
    models = [DiscordInteraction, GatewayState]
    with database.bind_ctx(models):
        database.create_tables(models, safe=True)
