"""The one place that lists the built-in tools; importing a module registers its tools."""

from __future__ import annotations

import importlib

from agent.tools.registry import REGISTRY, ToolRegistry

BUILTIN_TOOLS = (
    "agent.tools.builtin.clock",
    "agent.tools.builtin.calculator",
    "agent.tools.builtin.fetch_url",
    "agent.tools.builtin.memory_tools",
    "agent.tools.builtin.cron_tools",
)


def load_builtin_tools(modules: tuple[str, ...] = BUILTIN_TOOLS) -> ToolRegistry:
    """Import ``modules`` (each registers its tools in ``REGISTRY``); return ``REGISTRY``."""
    for module in modules:
        importlib.import_module(module)
    return REGISTRY
