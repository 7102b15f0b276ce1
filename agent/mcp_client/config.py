"""The tenant's MCP servers in the widely used ``mcpServers`` JSON shape.

The shape is the one Claude Desktop, Cursor and most MCP server READMEs use::

    {"mcpServers": {
        "github": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
                   "env": {"GITHUB_TOKEN": "..."}},
        "composio": {"url": "https://.../mcp", "headers": {"x-api-key": "..."}}}}

Keys of one server: ``command``/``args``/``env``/``cwd`` (stdio) or ``url``/``headers``
(streamable HTTP); ``type`` (``stdio``, ``http`` or ``streamable-http``, inferred when absent);
and Hermes' own optional keys ``includeTools``/``excludeTools`` (lists of the server's tool names),
``writes`` (tool names that must ask the user first even if annotated read-only), ``timeout``
(seconds per call, default ``DEFAULT_TIMEOUT``) and ``disabled`` (true = skip).
Unknown keys are ignored, as other clients do.

Sources, in order (later ones win per server name): the agent setting ``HERMES_MCP_SERVERS``
(a file path or inline JSON) and ``<data_dir>/mcp_servers.json`` (written 0600 by the agent when
the control plane pushes a configuration, ``write_pushed``).

Secrets: ``env`` and ``headers`` values are credentials.  ``ServerSpec`` hides them from
``repr``; ``secrets()`` lists them so every text leaving the MCP layer (logs, errors, tool
results) is passed through ``redact``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

SERVERS_FILE = "mcp_servers.json"
DEFAULT_TIMEOUT = 30.0  # seconds per call; Composio's hosted tools answer within a few seconds
CONNECT_TIMEOUT = 15.0  # seconds (at least) to start and initialise a server: ``npx`` may download it
SERVER_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")
HTTP_TYPES = ("http", "streamable-http", "streamableHttp")
REDACTED = "[redacted]"


class McpConfigError(ValueError):
    """The MCP configuration (or one server's entry) is invalid; the message says which and why."""


@dataclass(frozen=True)
class ServerSpec:
    """One MCP server.

    Attributes:
        name: the key in ``mcpServers`` (``SERVER_NAME_RE``); prefixes its tool names.
        command, args, env, cwd: the stdio server to launch (``command`` empty for HTTP).
        url, headers: the streamable-HTTP endpoint and request headers (``url`` empty for stdio).
        include, exclude: tool names offered / withheld (empty include = all).
        writes: tool names that always ask the user first.
        timeout: seconds per tool call; a connection attempt gets at least ``CONNECT_TIMEOUT``.
    """

    name: str
    command: str = ""
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    cwd: str = ""
    url: str = field(default="", repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    include: frozenset[str] = frozenset()
    exclude: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    timeout: float = DEFAULT_TIMEOUT

    @property
    def transport(self) -> str:
        """``stdio`` or ``http``."""
        return "http" if self.url else "stdio"

    def describe(self) -> str:
        """A log-safe description: the executable's name, or the URL without credentials or query."""
        if self.url:
            parts = urlsplit(self.url)
            return f"http {parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"
        return f"stdio {Path(self.command).name}"

    def connect_budget(self, retries: int) -> float:
        """Seconds ``retries`` connection attempts may take, backoff waits included."""
        return retries * (max(self.timeout, CONNECT_TIMEOUT) + 4.0)

    def offers(self, tool: str) -> bool:
        """Return True when ``tool`` passes the include/exclude filters."""
        return (not self.include or tool in self.include) and tool not in self.exclude

    def secrets(self) -> list[str]:
        """Every credential-like value of this server: env and header values, URL password and query values."""
        values = list(self.env.values()) + list(self.headers.values())
        for value in self.headers.values():  # "Bearer abc": the token alone may be echoed too
            values.extend(value.split()[1:])
        if self.url:
            parts = urlsplit(self.url)
            values.append(parts.password or "")
            values.extend(v for _, _, v in (p.partition("=") for p in parts.query.split("&")))
        return [v for v in values if len(v) >= 4]


def redact(text: str, secrets: list[str]) -> str:
    """Return ``text`` with every value of ``secrets`` replaced by ``[redacted]`` (longest first)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def parse_servers(data: object, origin: str) -> dict[str, dict]:
    """Return the raw ``mcpServers`` mapping of ``data`` (a dict with ``mcpServers``, or the mapping itself).

    Raises:
        McpConfigError: not an object of objects.
    """
    if isinstance(data, dict) and "mcpServers" in data:
        data = data["mcpServers"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise McpConfigError(f"{origin}: expected {{\"mcpServers\": {{name: {{...}}}}}}")
    return dict(data)


def spec_from_entry(name: str, entry: dict) -> ServerSpec:
    """Validate one ``mcpServers`` entry.

    Raises:
        McpConfigError: bad name, both or neither of ``command``/``url``, wrong value types, an
            unsupported ``type`` (``sse``, the transport the spec deprecated in 2025-03-26).
    """
    if not SERVER_NAME_RE.match(name):
        raise McpConfigError(f"server name {name!r} must be 1-40 letters, digits, '_' or '-'")
    kind = entry.get("type") or ("http" if entry.get("url") else "stdio")
    if kind not in ("stdio", *HTTP_TYPES):
        raise McpConfigError(f"server {name}: transport {kind!r} is not supported (stdio or http)")
    command, url = entry.get("command") or "", entry.get("url") or ""
    if kind == "stdio" and not command:
        raise McpConfigError(f"server {name}: a stdio server needs \"command\"")
    if kind in HTTP_TYPES and not url.startswith(("http://", "https://")):
        raise McpConfigError(f"server {name}: an HTTP server needs an http(s) \"url\"")
    try:
        timeout = float(entry.get("timeout", DEFAULT_TIMEOUT))
        spec = ServerSpec(
            name=name, command=command if kind == "stdio" else "",
            args=tuple(str(a) for a in entry.get("args") or ()),
            env={str(k): str(v) for k, v in (entry.get("env") or {}).items()},
            cwd=str(entry.get("cwd") or ""), url=url if kind in HTTP_TYPES else "",
            headers={str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
            include=frozenset(entry.get("includeTools") or ()),
            exclude=frozenset(entry.get("excludeTools") or ()),
            writes=frozenset(entry.get("writes") or ()), timeout=timeout)
    except (TypeError, ValueError, AttributeError) as exc:
        raise McpConfigError(f"server {name}: {exc}") from None
    if not 0 < timeout <= 600:
        raise McpConfigError(f"server {name}: timeout must be between 0 and 600 seconds")
    return spec


def specs_from_servers(servers: dict[str, dict]) -> dict[str, ServerSpec]:
    """Validate every enabled entry; an invalid one is logged (name and reason only) and skipped."""
    specs = {}
    for name, entry in servers.items():
        if entry.get("disabled"):
            continue
        try:
            specs[name] = spec_from_entry(name, entry)
        except McpConfigError as exc:
            log.error("MCP server skipped: %s", exc)
    return specs


def setting_servers(setting: str) -> dict[str, dict]:
    """Return the servers of ``HERMES_MCP_SERVERS`` (inline JSON when it starts with ``{``, else a path).

    Raises:
        McpConfigError: unreadable file or invalid JSON.
    """
    if not setting.strip():
        return {}
    text, origin = setting, "HERMES_MCP_SERVERS"
    if not setting.lstrip().startswith("{"):
        try:
            text, origin = Path(setting).read_text(), setting
        except OSError as exc:
            raise McpConfigError(f"HERMES_MCP_SERVERS: cannot read {setting}: {exc.strerror}") from None
    try:
        return parse_servers(json.loads(text), origin)
    except ValueError as exc:
        raise McpConfigError(f"{origin}: invalid JSON ({exc})") from None


def file_servers(data_dir: Path) -> dict[str, dict]:
    """Return the servers of ``<data_dir>/mcp_servers.json`` ({} when absent; logged when invalid)."""
    path = Path(data_dir) / SERVERS_FILE
    if not path.exists():
        return {}
    try:
        return parse_servers(json.loads(path.read_text()), str(path))
    except (OSError, ValueError) as exc:
        log.error("ignoring %s: %s", path, str(exc).splitlines()[0])
        return {}


def load_servers(setting: str, data_dir: Path) -> dict[str, dict]:
    """The effective raw configuration: the setting's servers, then the file's under their names."""
    return {**setting_servers(setting), **file_servers(data_dir)}


def write_pushed(setting: str, data_dir: Path, pushed: dict[str, dict]) -> dict[str, dict]:
    """Write ``<data_dir>/mcp_servers.json`` (mode 0600) = the setting's servers + ``pushed``.

    Servers pushed earlier but absent from ``pushed`` disappear (a disconnected service).

    Returns:
        The merged raw mapping written.

    Raises:
        McpConfigError: ``pushed`` is not an object of objects.
    """
    merged = {**setting_servers(setting), **parse_servers(pushed, "pushed mcp_servers")}
    path = Path(data_dir) / SERVERS_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"mcpServers": merged}, handle, indent=2, sort_keys=True)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to an existing temp file
    os.replace(tmp, path)
    return merged
