"""Slack installations: each workspace's bot token (encrypted) and the OAuth states (issue 11).

New tables ``slackinstallation`` (one row per workspace, or per Enterprise Grid org for an
org-wide install, keyed by ``installation_key``; ``bot_token`` holds a Fernet token from
``control/services/secrets_box.py``) and ``slackoauthstate`` (single-use ``state`` values of
the install flow with their expiry).
"""

from __future__ import annotations

from peewee import BooleanField, CharField, DateTimeField, Model, TextField


class _Base(Model):
    pass


class SlackInstallation(_Base):
    installation_key = CharField(unique=True)
    enterprise_id = CharField(null=True)
    team_id = CharField(null=True)
    team_name = CharField(default="")
    app_id = CharField(default="")
    bot_token = TextField()
    bot_id = CharField(default="")
    bot_user_id = CharField(default="")
    bot_scopes = TextField(default="")
    is_enterprise_install = BooleanField(default=False)
    installed_at = DateTimeField()


class SlackOAuthState(_Base):
    state = CharField(unique=True)
    expires_at = DateTimeField()


def upgrade(migrator, database) -> None:
    """Create the two tables (``safe``: a database that has them is left as it is)."""
    models = [SlackInstallation, SlackOAuthState]
    with database.bind_ctx(models):
        database.create_tables(models, safe=True)
