"""Discord test helpers (test_discord_webhook.py, test_media_discord.py)."""

from __future__ import annotations


def api_overrides(api) -> dict[str, str]:
    """The settings pointing the app at the ``DiscordApiStandin`` ``api``: its bot token,
    application id and API base."""
    return {"discord_bot_token": api.bot_token, "discord_application_id": api.application_id,
            "discord_api_base": api.base_url}
