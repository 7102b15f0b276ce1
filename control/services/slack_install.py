"""Slack app installations and OAuth state in the control database (bot tokens encrypted).

``DatabaseInstallationStore`` implements slack_sdk's ``InstallationStore``
(https://docs.slack.dev/tools/python-slack-sdk/oauth#installation-store) over the
``SlackInstallation`` table: ``save`` is called by bolt's OAuth flow after ``oauth.v2.access``
(``/slack/oauth_redirect``), ``find_bot`` by ``authorize`` and the adapter.  The bot token is
stored as a Fernet token (``control.services.secrets_box``), never in plain text.

Installations are keyed by ``installation_key``: the team id for a workspace install, the
enterprise id for an org-wide (Enterprise Grid) install; the same key prefixes every Slack
chat id (``control.channels.slack``).  Only bot tokens are kept (``installation_store_bot_only``):
the app acts as its bot, never as the installing user.

``DatabaseStateStore`` implements ``OAuthStateStore``: single-use ``state`` values that expire
after ``STATE_TTL`` seconds, the CSRF protection of the OAuth redirect
(https://docs.slack.dev/authentication/installing-with-oauth).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, timedelta

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.authorize import Authorize
from slack_sdk.oauth.installation_store import Bot, Installation, InstallationStore
from slack_sdk.oauth.state_store import OAuthStateStore

from control.channels.slack import SlackAdapter
from control.db import write_transaction
from control.models import SlackInstallation, SlackOAuthState, utcnow
from control.services.secrets_box import SecretsBox

log = logging.getLogger(__name__)

# Seconds an OAuth state stays valid: bolt's own default (OAuthStateStore implementations'
# ``expiration_seconds`` = 600).
STATE_TTL = 600


def installation_key(enterprise_id: str | None, team_id: str | None,
                     is_enterprise_install: bool | None = False) -> str | None:
    """The key of an installation: the enterprise id for an org-wide install, else the team id."""
    return (enterprise_id if is_enterprise_install else team_id) or enterprise_id


class DatabaseInstallationStore(InstallationStore):
    """slack_sdk ``InstallationStore`` over ``SlackInstallation`` (bot tokens only).

    Args:
        box: encrypts the bot token before it is stored and decrypts it when read.
    """

    def __init__(self, box: SecretsBox):
        self._box = box

    @property
    def logger(self) -> logging.Logger:
        """slack_sdk's interface asks for a logger."""
        return log

    def save(self, installation: Installation) -> None:
        """Store (or replace) the workspace's installation; the bot token encrypted.

        Raises:
            ValueError: the installation has no bot token (the app asks for bot scopes only).
        """
        self.save_bot(installation.to_bot())

    def save_bot(self, bot: Bot) -> None:
        """Store (or replace) the installation's bot."""
        if not bot.bot_token:
            raise ValueError("a Slack installation without a bot token cannot be used")
        key = installation_key(bot.enterprise_id, bot.team_id, bot.is_enterprise_install)
        values = {
            "enterprise_id": bot.enterprise_id, "team_id": bot.team_id,
            "team_name": bot.team_name or "", "app_id": bot.app_id or "",
            "bot_token": self._box.encrypt(bot.bot_token), "bot_id": bot.bot_id or "",
            "bot_user_id": bot.bot_user_id or "", "bot_scopes": ",".join(bot.bot_scopes or []),
            "is_enterprise_install": bool(bot.is_enterprise_install), "installed_at": utcnow(),
        }
        with write_transaction():
            updated = (SlackInstallation.update(**values)
                       .where(SlackInstallation.installation_key == key).execute())
            if not updated:
                SlackInstallation.create(installation_key=key, **values)
        log.info("Slack app installed in %s", key)

    def find_bot(self, *, enterprise_id: str | None, team_id: str | None,
                 is_enterprise_install: bool | None = False) -> Bot | None:
        """Return the installation's ``Bot`` (token decrypted), or None when not installed."""
        row = self._row(installation_key(enterprise_id, team_id, is_enterprise_install))
        if row is None:
            return None
        return Bot(app_id=row.app_id, enterprise_id=row.enterprise_id, team_id=row.team_id,
                   team_name=row.team_name, bot_token=self._box.decrypt(row.bot_token),
                   bot_id=row.bot_id, bot_user_id=row.bot_user_id, bot_scopes=row.bot_scopes,
                   is_enterprise_install=row.is_enterprise_install,
                   installed_at=row.installed_at.replace(tzinfo=UTC).timestamp())

    def find_installation(self, *, enterprise_id: str | None, team_id: str | None,
                          user_id: str | None = None,
                          is_enterprise_install: bool | None = False) -> Installation | None:
        """Return the installation (bot part only: user tokens are never kept), or None."""
        bot = self.find_bot(enterprise_id=enterprise_id, team_id=team_id,
                            is_enterprise_install=is_enterprise_install)
        if bot is None:
            return None
        return Installation(app_id=bot.app_id, enterprise_id=bot.enterprise_id, team_id=bot.team_id,
                            team_name=bot.team_name, bot_token=bot.bot_token, bot_id=bot.bot_id,
                            bot_user_id=bot.bot_user_id, bot_scopes=bot.bot_scopes,
                            user_id=user_id or "", is_enterprise_install=bot.is_enterprise_install,
                            installed_at=bot.installed_at)

    def delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        """Forget the installation (the app was uninstalled or its tokens revoked)."""
        key = installation_key(enterprise_id, team_id) or ""
        SlackInstallation.delete().where(SlackInstallation.installation_key == key).execute()

    def delete_installation(self, *, enterprise_id: str | None, team_id: str | None,
                            user_id: str | None = None) -> None:
        """Forget the installation (only bot installations are stored)."""
        self.delete_bot(enterprise_id=enterprise_id, team_id=team_id)

    def bot_token(self, key: str) -> str | None:
        """Return the decrypted bot token of installation ``key`` (a chat id's prefix), or None."""
        row = self._row(key)
        return self._box.decrypt(row.bot_token) if row is not None else None

    @staticmethod
    def _row(key: str | None) -> SlackInstallation | None:
        if not key:
            return None
        return SlackInstallation.get_or_none(SlackInstallation.installation_key == key)


def is_installed(enterprise_id, team_id, is_enterprise_install) -> bool:
    """True when the workspace (or org) of a request has installed the app.

    Checked before bolt dispatches, because bolt's answer to a request from a workspace without
    the app posts an apology to the request's ``response_url`` from inside the request.
    Arguments are bolt's context values, whatever their type in a hostile body.
    """
    key = installation_key(enterprise_id, team_id, bool(is_enterprise_install))
    return isinstance(key, str) and SlackInstallation.select().where(
        SlackInstallation.installation_key == key).exists()


class StoreAuthorize(Authorize):
    """bolt's ``authorize`` from our store alone.

    bolt's default (``InstallationStoreAuthorize``) calls ``auth.test`` on every request it
    has not cached; this answers from the database, so acknowledging an event never waits on
    a Slack API call (Slack's limit is 3 seconds,
    https://docs.slack.dev/apis/events-api/#responding).
    """

    def __init__(self, store: DatabaseInstallationStore):
        self.store = store

    def __call__(self, *, context, enterprise_id: str | None, team_id: str | None,
                 user_id: str | None, **_actor) -> AuthorizeResult | None:
        """Return the installation's bot credentials, or None (bolt then answers that the app
        is not installed)."""
        bot = self.store.find_bot(enterprise_id=enterprise_id, team_id=team_id,
                                  is_enterprise_install=context.is_enterprise_install)
        if bot is None:
            return None
        return AuthorizeResult(enterprise_id=bot.enterprise_id, team_id=bot.team_id,
                               bot_token=bot.bot_token, bot_id=bot.bot_id,
                               bot_user_id=bot.bot_user_id, bot_scopes=bot.bot_scopes,
                               user_id=user_id)


class DatabaseStateStore(OAuthStateStore):
    """slack_sdk ``OAuthStateStore`` over ``SlackOAuthState``: single-use, expiring states."""

    @property
    def logger(self) -> logging.Logger:
        """slack_sdk's interface asks for a logger."""
        return log

    def issue(self, *args, **kwargs) -> str:
        """Create and store a new state valid for ``STATE_TTL`` seconds; return it.

        Expired states are deleted first: anyone may open the install page, so states that are
        never consumed must not pile up (issue 19, finding 16).
        """
        now = utcnow()
        SlackOAuthState.delete().where(SlackOAuthState.expires_at <= now).execute()
        state = secrets.token_urlsafe(24)
        SlackOAuthState.create(state=state, expires_at=now + timedelta(seconds=STATE_TTL))
        return state

    def consume(self, state: str) -> bool:
        """Spend ``state``: True once if it was issued and has not expired, else False."""
        spent = (SlackOAuthState.delete()
                 .where((SlackOAuthState.state == state)
                        & (SlackOAuthState.expires_at > utcnow())).execute())
        SlackOAuthState.delete().where(SlackOAuthState.expires_at <= utcnow()).execute()
        return spent == 1


def slack_adapter(box: SecretsBox, api_base: str) -> SlackAdapter:
    """The delivery worker's Slack adapter: each workspace's bot token from this store
    (decrypted with ``box``), the Web API at ``api_base`` (``SLACK_API_BASE``)."""
    return SlackAdapter(DatabaseInstallationStore(box).bot_token, api_base)
