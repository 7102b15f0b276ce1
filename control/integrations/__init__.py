"""The services a user can connect through Composio (issue #13), loaded from ``services.yaml``.

The catalogue is data: every route, the dashboard and the stand-in read it, so adding a service
is adding an entry.  ``load`` validates the file once and returns frozen records.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from control.errors import ConfigError

SERVICES_FILE = Path(__file__).with_name("services.yaml")
AUTH_TYPES = ("oauth2", "api_key")
# MCP tool annotations (https://modelcontextprotocol.io/specification/2025-06-18/schema#toolannotations).
HINTS = ("readOnly", "destructive")
TOOLS_PER_SERVICE = 3
_KEY = re.compile(r"[a-z][a-z0-9_]{1,31}")
_TOOL = re.compile(r"[A-Z][A-Z0-9_]{2,63}")


@dataclass(frozen=True)
class Tool:
    """A representative tool: Composio slug ``name``, ``description``, ``hint`` (``HINTS``) and
    ``input_schema`` (a JSON Schema object)."""

    name: str
    description: str
    hint: str
    input_schema: dict


@dataclass(frozen=True)
class Credential:
    """A field an API-key service asks for: ``name``, ``label`` and the compiled ``pattern`` its
    whole value must match."""

    name: str
    label: str
    pattern: re.Pattern


@dataclass(frozen=True)
class Service:
    """One connectable service (see ``services.yaml`` for the meaning of each field)."""

    key: str
    name: str
    toolkit: str
    auth: str
    scopes: tuple[str, ...]
    credentials: tuple[Credential, ...]
    tools: tuple[Tool, ...]


def _require(entry: dict, field: str, kind: type, where: str):
    value = entry.get(field)
    if not isinstance(value, kind) or (kind is str and not value):
        raise ConfigError(f"{where}: {field} must be a non-empty {kind.__name__}")
    return value


def _tool(raw: object, where: str) -> Tool:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: each tool must be a mapping")
    name = _require(raw, "name", str, where)
    if not _TOOL.fullmatch(name):
        raise ConfigError(f"{where}: tool name {name!r} is not a Composio tool slug")
    hint = _require(raw, "hint", str, f"{where} {name}")
    if hint not in HINTS:
        raise ConfigError(f"{where} {name}: hint must be one of {HINTS}")
    schema = _require(raw, "input_schema", dict, f"{where} {name}")
    if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
        raise ConfigError(f"{where} {name}: input_schema must be an object schema with properties")
    missing = set(schema.get("required", [])) - set(schema["properties"])
    if missing:
        raise ConfigError(f"{where} {name}: required names unknown properties {sorted(missing)}")
    return Tool(name, _require(raw, "description", str, f"{where} {name}"), hint, schema)


def _service(raw: object, index: int) -> Service:
    where = f"{SERVICES_FILE.name} service #{index + 1}"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping")
    key = _require(raw, "key", str, where)
    if not _KEY.fullmatch(key):
        raise ConfigError(f"{where}: key {key!r} must match {_KEY.pattern}")
    where = f"{SERVICES_FILE.name} {key}"
    auth = _require(raw, "auth", str, where)
    if auth not in AUTH_TYPES:
        raise ConfigError(f"{where}: auth must be one of {AUTH_TYPES}")
    scopes = raw.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s for s in scopes):
        raise ConfigError(f"{where}: scopes must be a list of strings")
    credentials = []
    for cred in raw.get("credentials") or []:
        try:
            pattern = re.compile(_require(cred, "pattern", str, where))
        except re.error as exc:
            raise ConfigError(f"{where}: bad credential pattern: {exc}") from None
        credentials.append(Credential(_require(cred, "name", str, where),
                                      _require(cred, "label", str, where), pattern))
    if (auth == "api_key") != bool(credentials):
        raise ConfigError(f"{where}: api_key services, and only they, list credentials")
    tools = [_tool(t, where) for t in _require(raw, "tools", list, where)]
    if len(tools) != TOOLS_PER_SERVICE or len({t.name for t in tools}) != TOOLS_PER_SERVICE:
        raise ConfigError(f"{where}: exactly {TOOLS_PER_SERVICE} distinct tools are required")
    return Service(key, _require(raw, "name", str, where), _require(raw, "toolkit", str, where),
                   auth, tuple(scopes), tuple(credentials), tuple(tools))


def parse(document: object) -> dict[str, Service]:
    """Validate a parsed ``services.yaml`` document.

    Returns:
        ``{key: Service}`` in file order.

    Raises:
        ConfigError: a missing or ill-typed field, an unknown auth type or hint, a tool count
            other than three, or a key or toolkit used twice.
    """
    if not isinstance(document, dict) or not isinstance(document.get("services"), list):
        raise ConfigError(f"{SERVICES_FILE.name}: expected a mapping with a services list")
    services: dict[str, Service] = {}
    for index, raw in enumerate(document["services"]):
        service = _service(raw, index)
        if service.key in services:
            raise ConfigError(f"{SERVICES_FILE.name}: service {service.key} is listed twice")
        if any(s.toolkit == service.toolkit for s in services.values()):
            raise ConfigError(f"{SERVICES_FILE.name}: toolkit {service.toolkit} is used twice")
        services[service.key] = service
    return services


@lru_cache(maxsize=1)
def load() -> dict[str, Service]:
    """Return the validated catalogue of ``services.yaml`` (read once per process).

    Raises:
        ConfigError: the file is invalid (``parse``).
    """
    return parse(yaml.safe_load(SERVICES_FILE.read_text()))


def by_toolkit(toolkit: str) -> Service | None:
    """Return the service whose Composio toolkit slug is ``toolkit``, or None."""
    return next((s for s in load().values() if s.toolkit == toolkit.lower()), None)
