"""The control plane's own answers on each platform (not linked yet, help, linked), in one place."""

from __future__ import annotations

from dataclasses import dataclass

LINKED_OK = "Linked! You now talk to your personal Hermes agent here. Say hello."


@dataclass(frozen=True)
class ChannelTexts:
    """What the control plane answers on one platform (``channel_routing.route_inbound``).

    Attributes:
        unlinked: to an identity that is not linked (how to link).
        linked_help: to ``/help`` from a linked identity.
        linked_ok: after a successful link.
    """

    unlinked: str
    linked_help: str
    linked_ok: str = LINKED_OK


DISCORD = ChannelTexts(
    unlinked=("This Discord account is not linked to a Hermes agent yet. Copy the link code from "
              "your Hermes dashboard (Linked chats) and send /link CODE."),
    linked_help=("You're connected to your Hermes agent. /ask QUESTION talks to it (or send me a "
                 "direct message); /remember, /forget, /memory, /cron, /usage and /status work as "
                 "in any chat with Hermes."),
)
SLACK = ChannelTexts(
    unlinked=("This Slack account is not linked to a Hermes agent yet. Get a link code on your "
              "Hermes dashboard, then send `/hermes link CODE` (or press *Link with a code* on "
              "the Hermes app's Home tab)."),
    linked_help=("You're connected to your Hermes agent: write to it in its Messages tab, "
                 "mention @Hermes in a channel (it answers in a thread), or send "
                 "`/hermes your question`. The *Ask Hermes* shortcut opens a form."),
)
WHATSAPP = ChannelTexts(
    unlinked=("This WhatsApp number is not linked to a Hermes agent yet. Open the WhatsApp link "
              "on your Hermes dashboard (Chats), or send /link CODE with the code shown there."),
    linked_help="You're connected to your Hermes agent: just write here, it answers in this chat.",
)


def telegram(bot_username: str) -> ChannelTexts:
    """Telegram's answers; ``bot_username`` is the bot's @name (``TELEGRAM_BOT_USERNAME``), for
    the deep link the welcome e-mail carries (https://core.telegram.org/bots/features#deep-linking)."""
    return ChannelTexts(
        unlinked=("Hi! I'm Hermes, your personal AI agent. To connect this chat to your agent, open "
                  f"the link from your welcome email (it looks like t.me/{bot_username}?start=CODE), "
                  "or send /start CODE."),
        linked_help=("You're connected to your Hermes agent: just write to it. Commands: /remember "
                     "TEXT, /forget QUERY, /memory [QUERY], /cron add|list|pause|resume|remove, "
                     "/skills, /model, /usage, /status, /reset (new conversation), /stop (cancel the "
                     "running answer)."),
        linked_ok="Linked! This chat now talks to your personal Hermes agent. Say hello.")
