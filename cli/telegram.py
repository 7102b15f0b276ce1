"""``hermes telegram setup``: register the bot's webhook and its command menu with Telegram.

Bot API (https://core.telegram.org/bots/api): ``setWebhook`` with ``secret_token`` (Telegram then
sends it in ``X-Telegram-Bot-Api-Secret-Token``, which ``POST /webhooks/telegram`` requires) and
``setMyCommands`` with the agent's commands (``wire.commands.COMMANDS``).

Idempotent: ``getWebhookInfo`` and ``getMyCommands`` are read first and a setter is called only
when something differs.  ``getWebhookInfo`` never returns the secret token, so a SHA-256
fingerprint of the last registered one is kept in ``<HERMES_DATA_DIR>/telegram-webhook.sha256``
(mode 0600); a rotated secret (or a lost fingerprint) re-registers the webhook.

Output, one line each: ``webhook: unchanged|updated <url>`` and ``commands: unchanged|updated
(N)``; Ansible's ``changed_when`` looks for ``updated``.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import click

from control.errors import HermesError
from control.settings import Settings
from wire.commands import COMMANDS

#: Path of the control plane's Telegram webhook route (control/web/webhooks.py).
WEBHOOK_PATH = "/webhooks/telegram"
#: Update kinds the control plane acts on (control/channels/telegram.py parses messages,
#: edited messages and callback queries; everything else would only cost requests).
ALLOWED_UPDATES = ("message", "edited_message", "callback_query")
FINGERPRINT_FILE = "telegram-webhook.sha256"
# BotCommand limits (https://core.telegram.org/bots/api#botcommand).
_COMMAND_RE = re.compile(r"[a-z0-9_]{1,32}")
_DESCRIPTION_MAX = 256


class BotApiError(click.ClickException):
    """The Bot API answered ``ok: false`` or could not be reached."""


class BotApi:
    """Minimal Bot API client: ``call(method, **params) -> result``.

    Args:
        base: API base URL (``TELEGRAM_API_BASE``, e.g. ``https://api.telegram.org``).
        token: the bot token.
        timeout: seconds per request.
    """

    def __init__(self, base: str, token: str, timeout: float = 15.0):
        import httpx

        self._client = httpx.Client(base_url=f"{base.rstrip('/')}/bot{token}/", timeout=timeout)

    def call(self, method: str, **params):
        """POST ``params`` as JSON to ``method``; return its ``result``.

        Raises:
            BotApiError: transport failure or ``{"ok": false, ...}`` (the description is kept,
                never the token).
        """
        import httpx

        try:
            answer = self._client.post(method, json=params).json()
        except (httpx.HTTPError, ValueError) as err:
            raise BotApiError(f"Telegram {method} failed: {type(err).__name__}") from None
        if not answer.get("ok"):
            raise BotApiError(f"Telegram {method} refused: {answer.get('description', answer)}")
        return answer["result"]

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()


def bot_commands() -> list[dict]:
    """Return the Telegram command menu: every command of ``wire.commands.COMMANDS``, in order.

    Each entry is ``{"command": name, "description": text}``, the description being the one
    the agent's ``/help`` gives, capitalised.

    Raises:
        click.ClickException: a command's name or description breaks the BotCommand limits.
    """
    commands = []
    for command in COMMANDS:
        name, text = command.name, command.description
        if not _COMMAND_RE.fullmatch(name) or not 1 <= len(text) <= _DESCRIPTION_MAX:
            raise click.ClickException(f"command /{name} cannot be a Telegram BotCommand")
        commands.append({"command": name, "description": text})
    return commands


def _fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_webhook(api: BotApi, url: str, secret: str, state_dir: Path) -> bool:
    """Register ``url`` with ``secret`` and ``ALLOWED_UPDATES`` unless Telegram already has them.

    Args:
        state_dir: directory of the secret's fingerprint file (created if missing).

    Returns:
        True when ``setWebhook`` was called.

    Raises:
        BotApiError: Telegram refused a call.
    """
    info = api.call("getWebhookInfo")
    fingerprint_file = state_dir / FINGERPRINT_FILE
    known = fingerprint_file.read_text().strip() if fingerprint_file.is_file() else ""
    same = (info.get("url") == url
            and sorted(info.get("allowed_updates") or []) == sorted(ALLOWED_UPDATES)
            and known == _fingerprint(secret))
    if same:
        return False
    # drop_pending_updates=False: updates queued while the webhook changes are still delivered.
    api.call("setWebhook", url=url, secret_token=secret, allowed_updates=list(ALLOWED_UPDATES),
             drop_pending_updates=False)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = fingerprint_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(_fingerprint(secret) + "\n")
    os.replace(tmp, fingerprint_file)
    return True


def ensure_commands(api: BotApi, commands: list[dict]) -> bool:
    """Set the default-scope command menu to ``commands`` unless it already is exactly that.

    Returns:
        True when ``setMyCommands`` was called.

    Raises:
        BotApiError: Telegram refused a call.
    """
    if api.call("getMyCommands") == commands:
        return False
    api.call("setMyCommands", commands=commands)
    return True


@click.group()
def telegram():
    """Telegram bot registration."""


@telegram.command()
def setup():
    """Register the webhook (with its secret token) and the command menu; idempotent.

    Reads TELEGRAM_BOT_TOKEN, TELEGRAM_WEBHOOK_SECRET, TELEGRAM_API_BASE, HERMES_PUBLIC_URL and
    HERMES_DATA_DIR through control.settings.
    """
    try:
        settings = Settings.from_env()
    except HermesError as err:
        raise click.ClickException(err.message) from err
    missing = [name for name, value in (("TELEGRAM_BOT_TOKEN", settings.telegram_bot_token),
                                        ("TELEGRAM_WEBHOOK_SECRET",
                                         settings.telegram_webhook_secret)) if not value]
    if missing:
        raise click.ClickException(f"set {' and '.join(missing)} first")
    url = settings.public_url.rstrip("/") + WEBHOOK_PATH
    api = BotApi(settings.telegram_api_base, settings.telegram_bot_token)
    try:
        webhook = ensure_webhook(api, url, settings.telegram_webhook_secret,
                                 Path(settings.data_dir))
        commands = bot_commands()
        menu = ensure_commands(api, commands)
    finally:
        api.close()
    click.echo(f"webhook: {'updated' if webhook else 'unchanged'} {url}")
    click.echo(f"commands: {'updated' if menu else 'unchanged'} ({len(commands)})")
