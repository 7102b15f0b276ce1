"""The agent's chat commands as data: each one's name, what it does and how it is written.

``agent.commands`` answers them; ``cli.telegram`` and ``cli.discord`` register them as bot
menus and ``control.web.dashboard`` lists them. The control plane may not import the agent, so
the facts they share live down here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChatCommand:
    """One slash command.

    Attributes:
        name: lowercase, without the slash (``cron``).
        summary: what it does, as ``/help`` says it (``schedule a prompt``).
        usage: each way of writing it (``/cron list``); ``/help`` gives the first one the
            summary and puts the others together on the next line.
        listed: whether ``/help`` lists it (``/start`` greets, with the list).
    """

    name: str
    summary: str
    usage: tuple[str, ...]
    listed: bool = True

    @property
    def description(self) -> str:
        """The summary as a menu shows it, capitalised (``Schedule a prompt``)."""
        return self.summary[:1].upper() + self.summary[1:]

    def help_lines(self) -> list[str]:
        """The command's lines in ``HELP``: the first usage with the summary, then the others."""
        first, *others = self.usage
        return [f"{first} — {self.summary}"] + ([" · ".join(others)] if others else [])


COMMANDS = (
    ChatCommand("help", "this list", ("/help",)),
    ChatCommand("start", "greet a new user", ("/start",), listed=False),
    ChatCommand("remember", "store a fact or preference", ("/remember TEXT",)),
    ChatCommand("forget", "forget matching memories (or one by id)", ("/forget QUERY|ID",)),
    ChatCommand("memory", "list recent memories, or search them", ("/memory [QUERY]",)),
    ChatCommand("cron", "schedule a prompt",
                ('/cron add "<min hour day month weekday>" [tz=Area/City] PROMPT', "/cron list",
                 "/cron pause|resume|remove ID")),
    ChatCommand("goal", "let me work on it on my own, turn after turn, until done",
                ("/goal OBJECTIVE", "/goal status|pause|resume|cancel")),
    ChatCommand("skills", "skills I learned", ("/skills [list|show NAME|delete NAME]",)),
    ChatCommand("model", "show or choose the model", ("/model [NAME|default]",)),
    ChatCommand("tools", "my tools; allow one to write without asking first",
                ("/tools [allow NAME|ask NAME]",)),
    ChatCommand("usage", "tokens and cost today and this month", ("/usage",)),
    ChatCommand("status", "how I am doing", ("/status",)),
    ChatCommand("reset", "start a new conversation", ("/reset",)),
    ChatCommand("stop", "stop the reply in progress", ("/stop",)),
)
"""Every command the agent answers, in menu order (Telegram's menu, the dashboard's page)."""

# The menus open with /help; the help text ends with it, after the commands it explains.
HELP = "Commands:\n" + "\n".join(
    line for command in sorted((c for c in COMMANDS if c.listed), key=lambda c: c.name == "help")
    for line in command.help_lines())
"""The reply to ``/help``: one line per command, or two when it has more ways of writing it."""
