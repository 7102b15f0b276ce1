"""Telegram Updates built from published fixtures (``payloads/telegram``).

Only ids, chat and text are set per scenario; everything else is the published object.
"""

from __future__ import annotations

import copy
import json
from importlib import resources


def published_update(name: str) -> dict:
    """Return a published Update, e.g. ``update_text`` or ``official_webhooks_guide/update_voice``."""
    path = resources.files("standins") / "payloads" / "telegram" / f"{name}.json"
    return json.loads(path.read_text())


def text_update(update_id: int, chat_id: int, text: str, message_id: int | None = None) -> dict:
    """A private-chat text message (commands get a ``bot_command`` entity, as Telegram sends them)."""
    base = "update_command_bot_command" if text.startswith("/") else "update_text"
    update = copy.deepcopy(published_update(base))
    update["update_id"] = update_id
    message = update["message"]
    message["message_id"] = message_id if message_id is not None else update_id
    message["from"]["id"] = chat_id
    message["chat"]["id"] = chat_id
    message["text"] = text
    if text.startswith("/"):
        message["entities"] = [{"offset": 0, "length": len(text.split(" ")[0]), "type": "bot_command"}]
    return update
