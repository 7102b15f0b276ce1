"""Model-facing names of MCP tools, and MCP tool results as text for the model.

Names: ``<server>__<tool>`` (e.g. ``github__create_issue``), so two servers' ``search`` tools
do not collide and the model sees where a tool comes from.  The Messages API accepts tool names
matching ``^[a-zA-Z0-9_-]{1,64}$`` (Anthropic API reference, Messages, ``tools[].name``:
https://docs.anthropic.com/en/api/messages); other characters become ``_`` and a longer name is
cut to 55 characters plus ``_`` and 8 hex digits of its SHA-1, so it stays unique and stable.
"""

from __future__ import annotations

import hashlib
import json
import re

TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_NAME = 64
SEPARATOR = "__"


def tool_name(server: str, tool: str) -> str:
    """Return the model-facing name of ``server``'s tool ``tool`` (matches ``TOOL_NAME_RE``)."""
    raw = f"{server}{SEPARATOR}{tool}"
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", raw)
    if len(name) > MAX_NAME:
        name = f"{name[:MAX_NAME - 9]}_{hashlib.sha1(raw.encode()).hexdigest()[:8]}"
    return name


def input_schema(schema: dict | None) -> dict:
    """Return an MCP tool's input schema as the Messages API wants it (an ``object`` schema)."""
    schema = dict(schema or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    return schema


def result_text(result) -> str:
    """Return an MCP ``CallToolResult`` as text: text blocks joined, other blocks described,
    the structured content as JSON when there is no text."""
    parts = []
    for block in result.content or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} {getattr(block, 'mime_type', '') or ''}]".replace(" ]", "]"))
    if not any(p.strip() for p in parts) and result.structured_content is not None:
        return json.dumps(result.structured_content, default=str)
    return "\n".join(parts)
