"""Which tools may write without asking: the user's "always allow" list and pending confirmations.

A tool with ``Tool.confirm`` (an MCP tool that writes or sends), or a call that would send
private data to a new host (``agent.tools.egress``), runs only when
* the user allowed it for good (``/tools allow NAME``; the list is ``always``), or
* the user said yes to the confirmation question the agent asked for exactly that call in this
  chat (``ask`` stores it as pending; the next message in the chat either grants it, when it is
  a yes, or cancels it).
State: ``<data_dir>/tool_permissions.json`` (mode 0600)
``{"always": [names], "pending": {chat_key: {"tool", "input", "at"}}}``.  A pending question
expires after ``PENDING_TTL`` seconds.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.tools.egress import url_host

PENDING_TTL = 3600.0  # seconds: a "yes" an hour later is about something else
# A short yes in the languages of the dashboard's language choice is confirmation; anything
# else (including a yes buried in a longer message) cancels, the safe reading.
YES_RE = re.compile(r"^\s*(yes|y|yeah|yep|ok|okay|sure|confirm(ed)?|go ahead|do it|approve(d)?|"
                    r"ja|oui|s[ií]|sim|da|tak|はい|是)\b[\s.!,]*(please|do it|go ahead)?[\s.!]*$",
                    re.IGNORECASE)


def is_yes(text: str) -> bool:
    """Return True when ``text`` is a short affirmative answer."""
    return len(text) <= 40 and YES_RE.match(text) is not None


@dataclass(frozen=True)
class Pending:
    """A call waiting for the user's yes: tool name, its input and when it was asked (Unix s)."""

    tool: str
    input: dict
    at: float


class ToolPermissions:
    """The permission file of one agent.

    Args:
        path: ``<data_dir>/tool_permissions.json``.
        clock: Unix seconds (injectable).
    """

    def __init__(self, path: Path, *, clock=time.time):
        self.path = Path(path)
        self.clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, tuple[str, str]] = {}  # chat -> (tool, input JSON): one call

    def always(self) -> list[str]:
        """Return the tools allowed for good, sorted."""
        with self._lock:
            return sorted(self._read()["always"])

    def allow(self, tool: str) -> None:
        """Allow ``tool`` for good."""
        with self._lock:
            state = self._read()
            state["always"] = sorted(set(state["always"]) | {tool})
            self._write(state)

    def revoke(self, tool: str) -> bool:
        """Ask again before ``tool``; return False when it was not allowed."""
        with self._lock:
            state = self._read()
            if tool not in state["always"]:
                return False
            state["always"].remove(tool)
            self._write(state)
            return True

    def ask(self, chat_key: str, tool: str, arguments: dict) -> None:
        """Remember that the user was asked to confirm ``tool(arguments)`` in ``chat_key``."""
        with self._lock:
            state = self._read()
            state["pending"][chat_key] = {"tool": tool, "input": arguments, "at": self.clock()}
            self._write(state)

    def take_pending(self, chat_key: str) -> Pending | None:
        """Remove and return the chat's pending question (None when none or expired)."""
        with self._lock:
            state = self._read()
            item = state["pending"].pop(chat_key, None)
            if item is None:
                return None
            self._write(state)
        if self.clock() - item["at"] > PENDING_TTL:
            return None
        return Pending(item["tool"], item["input"], item["at"])

    def grant_once(self, chat_key: str, tool: str, arguments: dict) -> None:
        """Let the next call of ``tool`` with exactly ``arguments`` in ``chat_key`` run (in memory)."""
        with self._lock:
            self._grants[chat_key] = (tool, _canonical(arguments))

    def permits(self, chat_key: str, tool: str, arguments: dict) -> bool:
        """True when ``tool(arguments)`` may run now; a one-time grant is used up."""
        with self._lock:
            if tool in self._read()["always"]:
                return True
            if self._grants.get(chat_key) == (tool, _canonical(arguments)):
                del self._grants[chat_key]
                return True
        return False

    def _read(self) -> dict:
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            state = {}
        return {"always": list(state.get("always") or []), "pending": dict(state.get("pending") or {})}

    def _write(self, state: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, sort_keys=True)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def _canonical(arguments: dict) -> str:
    return json.dumps(arguments, sort_keys=True, default=str)


def confirmation_question(name: str, arguments: dict, tool=None) -> str:
    """Return the question asked before ``name(arguments)`` runs (``tool``: its ``Tool``, for the source)."""
    shown = json.dumps(arguments, ensure_ascii=False, default=str)
    if len(shown) > 500:
        shown = shown[:500] + "…"
    where = f" ({tool.source})" if tool is not None and tool.source else ""
    what = "which can change or send things"
    if tool is not None and tool.sends_to:  # asked by agent.tools.egress
        what = (f"which would send a request to {url_host(arguments.get(tool.sends_to))}, a site "
                "you did not name, after I read your memory or a connected service")
    return (f"Before I run {name}{where}, {what}, please confirm.\n"
            f"Input: {shown}\n"
            f"Reply yes to run it, anything else to cancel. To stop asking for this tool: /tools allow {name}")
