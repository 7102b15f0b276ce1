"""The tools an agent offers the model, as text: for ``/tools`` in a chat and ``hermes-agent tools``."""

from __future__ import annotations


def _rows(registry, allowed: list[str]):
    for name in registry.names():
        tool = registry.get(name)
        if tool is None:
            continue
        flag = ("allowed" if name in allowed else "asks first") if tool.confirm else ""
        yield name, tool.source or "built-in", flag


def chat_listing(registry, status: dict[str, str], allowed: list[str]) -> str:
    """Return one line per tool (``name (source) [asks first|allowed]``) and per unavailable server."""
    lines = [f"{name} ({source}){f' {flag}' if flag else ''}" for name, source, flag in _rows(registry, allowed)]
    lines += [f"Server {name} is unavailable: {why}" for name, why in sorted(status.items()) if why]
    return ("Tools I can use:\n" + "\n".join(lines) +
            "\n\nTools that ask first change or send things; /tools allow NAME stops the question, "
            "/tools ask NAME brings it back.")


def table(registry, status: dict[str, str], allowed: list[str]) -> list[str]:
    """Return columns ``name  source  flag`` per tool, then ``server NAME unavailable: WHY`` lines."""
    lines = [f"{name:<48} {source:<16} {flag}".rstrip() for name, source, flag in _rows(registry, allowed)]
    lines += [f"server {name} unavailable: {why}" for name, why in sorted(status.items()) if why]
    return lines
