"""The tool registry: tools register themselves here; this module imports no tool.

A tool is one module under ``agent/tools/builtin/`` that calls ``register(Tool(...))`` (or uses
the ``@tool`` decorator) at import time; ``agent.tools.loader`` imports the built-in modules
from one explicit list.  Handlers receive the model's input (a JSON object) and a
``ToolContext`` and return text (or a JSON-able value); they raise ``ToolError`` (or anything)
to report failure, which the loop sends back to the model as an ``is_error`` tool result.
Tool definitions follow the Anthropic tool shape ``{"name", "description", "input_schema"}``.

Each runtime offers a ``LayeredRegistry``: the shared built-ins plus tools added while the
agent runs, in named groups (one per MCP server, ``agent.mcp_client``) replaced as a whole.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.tools.egress import TurnEgress


class ToolError(Exception):
    """A tool failed in a way the model should hear about (the message is shown to it)."""


@dataclass
class ToolContext:
    """What a tool may use while serving one turn.

    Attributes:
        tenant, channel, chat_id, envelope_id: who asked and where the answer goes.
        services: named services of the agent runtime (``memory``, ``cron``, ``config``,
            ``now``...); tools look up what they need and raise ``ToolError`` when it is absent.
        egress: what the turn has read and which hosts the user named
            (``agent.tools.egress``); the loop asks before a ``sends_to`` tool leaks data.
    """

    tenant: str
    channel: str = "web"
    chat_id: str = ""
    envelope_id: str = ""
    services: dict[str, Any] = field(default_factory=dict)
    egress: TurnEgress = field(default_factory=TurnEgress)

    def service(self, name: str):
        """Return service ``name``.

        Raises:
            ToolError: the runtime has no such service.
        """
        if self.services.get(name) is None:
            raise ToolError(f"the {name} service is not available on this agent")
        return self.services[name]


@dataclass(frozen=True)
class Tool:
    """One tool.

    Attributes:
        name: unique name the model calls (``[a-z0-9_]{1,64}``).
        description: what it does and when to use it (the model reads this).
        input_schema: JSON Schema of the input object.
        handler: ``(input: dict, ctx: ToolContext) -> str | JSON-able``.
        timeout: seconds allowed per call; None = the agent's default.
        confirm: the tool writes or sends: the loop runs it only when the user allowed it
            (``agent.tools.permissions``), otherwise the turn ends with a confirmation question.
        source: where it comes from: ``""`` for a built-in, else the MCP server's name.
        private: its results hold the user's private data (memory, a connected service).
        sends_to: the input field holding a URL it sends a request to (``""``: none); in a turn
            that read private data, a host the user did not name needs their yes
            (``agent.tools.egress``).
    """

    name: str
    description: str
    input_schema: dict
    handler: Callable[[dict, ToolContext], Any]
    timeout: float | None = None
    confirm: bool = False
    source: str = ""
    private: bool = False
    sends_to: str = ""

    def definition(self) -> dict:
        """Return the definition sent to the model."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}


class ToolRegistry:
    """Tools by name."""

    def __init__(self):
        self._tools: dict[str, Tool] = {}
        self._lock = threading.Lock()

    def register(self, tool: Tool) -> Tool:
        """Add ``tool`` (replacing one of the same name); return it."""
        with self._lock:
            self._tools[tool.name] = tool
        return tool

    def get(self, name: str) -> Tool | None:
        """Return the tool called ``name``, or None."""
        return self._tools.get(name)

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._tools)

    def definitions(self) -> list[dict]:
        """Return every tool's definition, sorted by name."""
        return [self._tools[n].definition() for n in self.names()]


class LayeredRegistry(ToolRegistry):
    """A runtime's tools: those of ``base`` (the shared built-ins) plus groups set at run time.

    A group's tools shadow a base tool of the same name; ``set_group`` replaces a group whole,
    so a server's removed tools disappear with its new listing.
    """

    def __init__(self, base: ToolRegistry):
        super().__init__()
        self.base = base
        self._groups: dict[str, list[str]] = {}

    def set_group(self, group: str, tools: list[Tool]) -> None:
        """Replace the tools of ``group`` with ``tools`` (``[]`` removes the group)."""
        with self._lock:
            for name in self._groups.pop(group, []):
                self._tools.pop(name, None)
            if tools:
                self._groups[group] = [t.name for t in tools]
                self._tools.update((t.name, t) for t in tools)

    def get(self, name: str) -> Tool | None:
        """Return the tool called ``name`` (a group's first, then the base's), or None."""
        return self._tools.get(name) or self.base.get(name)

    def names(self) -> list[str]:
        """Return every name, sorted."""
        with self._lock:
            own = set(self._tools)
        return sorted(own | set(self.base.names()))

    def definitions(self) -> list[dict]:
        """Return every tool's definition, sorted by name."""
        tools = (self.get(n) for n in self.names())
        return [t.definition() for t in tools if t is not None]


REGISTRY = ToolRegistry()


def tool(name: str, description: str, input_schema: dict, *, timeout: float | None = None,
         registry: ToolRegistry | None = None, private: bool = False, sends_to: str = ""):
    """Decorator registering ``handler`` as a tool in ``registry`` (default ``REGISTRY``);
    ``private`` and ``sends_to`` as on ``Tool``."""
    def decorate(handler):
        (registry or REGISTRY).register(Tool(name, description, input_schema, handler, timeout,
                                             private=private, sends_to=sends_to))
        return handler
    return decorate
