"""``hermes discord setup`` (global slash commands) and ``hermes discord gateway`` (direct messages).

``setup`` registers the commands ``COMMAND_NAMES`` with one bulk overwrite
(``PUT /applications/{id}/commands``,
https://discord.com/developers/docs/interactions/application-commands#bulk-overwrite-global-application-commands),
after reading the registered ones (``GET``) and comparing: output ``commands: unchanged (N)`` or
``commands: updated (N)`` (Ansible's ``changed_when`` looks for ``updated``).  Descriptions come
from the agent's commands (``wire.commands``), as for Telegram.  The interactions endpoint URL
(``<HERMES_PUBLIC_URL>/webhooks/discord``) is set once in the Developer Portal: Discord offers
no API for it that a bot token may call.

``gateway`` holds the Gateway session that receives direct messages
(``control.channels.discord_gateway``) and routes each like a slash command; it runs next to
the control plane as its own process (one per bot: Discord allows one session per shard).
"""

from __future__ import annotations

import time

import click

from cli.context import open_runtime
from control.channels.base import ChannelError
from control.channels.discord_gateway import GatewayClient, GatewayFatal
from control.errors import HermesError
from control.settings import Settings
from wire.commands import COMMANDS
from wire.errors import BusUnavailable

#: Path of the interactions endpoint (control/web/webhooks.py).
WEBHOOK_PATH = "/webhooks/discord"
#: The global commands, in menu order (issue #11).
COMMAND_NAMES = ("ask", "link", "remember", "forget", "memory", "cron", "usage", "status", "help")
# Commands the agent's registry does not describe (the control plane answers or forwards them).
OWN_DESCRIPTIONS = {"ask": "Ask your Hermes agent anything",
                    "link": "Link this Discord account to your Hermes agent"}
# Option name, description, required (all strings: type 3).
OPTIONS = {
    "ask": ("question", "What to ask", True),
    "link": ("code", "The link code from your Hermes dashboard", True),
    "remember": ("text", "The fact or preference to remember", True),
    "forget": ("query", "What to forget (words or a memory id)", True),
    "memory": ("query", "Search your memories (empty: the most recent)", False),
    "cron": ("args", 'add "<min hour day month weekday>" PROMPT | list | pause|resume|remove ID', False),
}
STRING_OPTION = 3
DESCRIPTION_MAX = 100  # Discord: 1-100 characters for command and option descriptions.
RATE_LIMIT_RETRIES = 3


def discord_commands() -> list[dict]:
    """Return the global command definitions (type 1, CHAT_INPUT), in ``COMMAND_NAMES`` order."""
    described = {c.name: c.description for c in COMMANDS}
    commands = []
    for name in COMMAND_NAMES:
        description = (OWN_DESCRIPTIONS.get(name) or described.get(name) or name)[:DESCRIPTION_MAX]
        command = {"type": 1, "name": name, "description": description}
        if name in OPTIONS:
            option, text, required = OPTIONS[name]
            command["options"] = [{"type": STRING_OPTION, "name": option,
                                   "description": text[:DESCRIPTION_MAX], "required": required}]
        commands.append(command)
    return commands


def _comparable(commands: list[dict]) -> list[tuple]:
    """The parts of command definitions this setup owns, so Discord's added fields (ids,
    versions, defaults) do not count as a difference."""
    return sorted((c.get("type", 1), c["name"], c.get("description", ""),
                   tuple((o.get("type"), o.get("name"), o.get("description", ""), bool(o.get("required")))
                         for o in c.get("options") or ()))
                  for c in commands)


def _call(client, method: str, path: str, json=None):
    """One REST call, waiting out rate limits (``retry_after``) up to ``RATE_LIMIT_RETRIES`` times."""
    for attempt in range(RATE_LIMIT_RETRIES + 1):
        try:
            return client.request(method, path, json=json)
        except ChannelError as exc:
            if not exc.rate_limited or attempt == RATE_LIMIT_RETRIES:
                raise click.ClickException(f"Discord {method} {path.split('/')[1]} failed: {exc}") from None
            time.sleep(exc.retry_after or 1.0)
    raise AssertionError("unreachable")


def ensure_commands(client, application_id: str, commands: list[dict]) -> bool:
    """Overwrite the global commands with ``commands`` unless Discord already has exactly them.

    Returns:
        True when the bulk overwrite was sent.

    Raises:
        click.ClickException: Discord refused a call or could not be reached.
    """
    path = f"/applications/{application_id}/commands"
    if _comparable(_call(client, "GET", path) or []) == _comparable(commands):
        return False
    _call(client, "PUT", path, json=commands)
    return True


def _settings():
    try:
        settings = Settings.from_env()
    except HermesError as err:
        raise click.ClickException(err.message) from err
    missing = [name for name, value in (("DISCORD_BOT_TOKEN", settings.discord_bot_token),
                                        ("DISCORD_APPLICATION_ID", settings.discord_application_id))
               if not value]
    if missing:
        raise click.ClickException(f"set {' and '.join(missing)} first")
    return settings


@click.group()
def discord():
    """Discord bot registration and its Gateway (direct messages)."""


@discord.command()
def setup():
    """Register the global slash commands (bulk overwrite); idempotent.

    Reads DISCORD_BOT_TOKEN, DISCORD_APPLICATION_ID and DISCORD_API_BASE through control.settings.
    """
    # deferred: keeps `hermes --help` light: loads pynacl (~15 ms)
    from control.channels.discord import DiscordRestClient

    settings = _settings()
    client = DiscordRestClient(settings.discord_bot_token, settings.discord_api_base)
    try:
        commands = discord_commands()
        updated = ensure_commands(client, settings.discord_application_id, commands)
    finally:
        client.close()
    click.echo(f"commands: {'updated' if updated else 'unchanged'} ({len(commands)})")
    click.echo(f"interactions endpoint (set in the Developer Portal): "
               f"{settings.public_url.rstrip('/')}{WEBHOOK_PATH}")


@discord.command()
def gateway():
    """Hold the Gateway session that receives direct messages, until SIGINT/SIGTERM.

    Reads DISCORD_BOT_TOKEN, DISCORD_API_BASE, DISCORD_GATEWAY_URL (default: GET /gateway/bot)
    and the control plane's database and bus settings.
    """
    import asyncio
    import signal

    # deferred: keeps `hermes --help` light: loads redis, peewee, pynacl (~230 ms)
    from control.services import channel_watchdog
    from control.services.discord_routing import on_gateway_dispatch

    settings = _settings()
    rt = open_runtime()
    url = settings.discord_gateway_url or _call(rt.discord_rest, "GET", "/gateway/bot")["url"]

    def dispatch(kind: str, data: dict) -> None:
        with rt.db.connection_context():
            _route_with_retry(kind, data, rt, on_gateway_dispatch)

    def state(connected: bool) -> None:
        with rt.db.connection_context():
            channel_watchdog.report_gateway("discord", connected)

    client = GatewayClient(url, settings.discord_bot_token, dispatch, state)

    async def main():
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await client.run(stopping)

    click.echo(f"discord gateway: connecting to {url}")
    try:
        asyncio.run(main())
    except GatewayFatal as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        rt.close()


BUS_RETRY_FOR = 60.0  # seconds a DM waits for the bus before it is given up (and logged).


def _route_with_retry(kind: str, data: dict, rt, route) -> None:
    """Route a dispatch, retrying while the bus is down (the Gateway does not redeliver)."""
    import logging

    # deferred: keeps `hermes --help` light: loads peewee (~65 ms)
    from control.services.routing import record_control_reply

    def send(channel_id: str, text: str) -> None:
        try:
            message_id = rt.discord_adapter.send(channel_id, text)
        except ChannelError as exc:
            logging.getLogger(__name__).error("could not answer DM channel %s: %s", channel_id, exc)
            return
        record_control_reply("discord", channel_id, text, message_id)

    deadline = time.monotonic() + BUS_RETRY_FOR
    while True:
        try:
            route(kind, data, rt.bus, send, envelope_key=rt.envelope_key,
                  ingest_media=rt.tasks.ingest_media)
            return
        except BusUnavailable as exc:
            if time.monotonic() > deadline:
                logging.getLogger(__name__).error("DM %s lost: bus unavailable: %s",
                                                  data.get("id"), exc)
                return
            time.sleep(1.0)
