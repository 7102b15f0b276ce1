"""One MCP server's session, run on the manager's asyncio loop.

A connection task holds the SDK's ``mcp.Client`` open (its context must be entered and left in
one task) until ``close()``; tool calls come from other tasks on the same loop.  The tool list
is fetched after connecting and again whenever the server announces
``notifications/tools/list_changed``: as a plain notification on handshake-era sessions
(protocol versions up to 2025-11-25) or through a ``subscriptions/listen`` stream on
2026-07-28 sessions, where servers send change notifications only to listeners.

Connecting is retried with exponential backoff (tenacity) on transient failures; a tool call
is not retried here, since a write may have happened before the connection broke.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CONNECTION_CLOSED
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from tenacity import AsyncRetrying, stop_after_attempt, wait_exponential

from agent.mcp_client.config import CONNECT_TIMEOUT, ServerSpec
from agent.mcp_client.naming import result_text

log = logging.getLogger(__name__)

CLOSE_TIMEOUT = 5.0  # seconds to wind a session down (the SDK bounds its own process shutdown)
MAX_TOOL_PAGES = 50  # tools/list pages read at most: a paginator that never ends cannot hang us


class ServerDown(Exception):
    """The server is not connected (it exited, closed the connection or never answered)."""


class ToolCallFailed(Exception):
    """The server answered a tool call with ``isError``; ``text`` is what it said."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class ServerConnection:
    """The session with ``spec``'s server.

    Args:
        spec: the server.
        on_tools: ``(server name, [mcp_types.Tool]) -> None``, called with every fresh listing.
        stderr_path: file (mode 0600, rewritten per session) receiving a stdio server's stderr,
            so the agent's logs stay clean of whatever the server prints.
        retries, backoff: connection attempts and the first wait between them (seconds, doubling).
        mode: the SDK's protocol negotiation: ``auto`` (probe ``server/discover``, fall back to
            the initialize handshake of servers up to 2025-11-25) or ``legacy`` (handshake only).
    """

    def __init__(self, spec: ServerSpec, on_tools: Callable[[str, list], None], *,
                 stderr_path: Path | None = None, retries: int = 2, backoff: float = 0.2,
                 mode: str = "auto"):
        self.spec = spec
        self.on_tools = on_tools
        self.stderr_path = stderr_path
        self.retries = retries
        self.backoff = backoff
        self.mode = mode
        self.client: Client | None = None
        self._task: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._connect_lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """True while the session is open and its task alive."""
        return self.client is not None and self._task is not None and not self._task.done()

    async def ensure_connected(self) -> None:
        """Connect unless connected, retrying transient failures with backoff.

        Raises:
            ServerDown: every attempt failed (the last reason is chained).
        """
        async with self._connect_lock:
            if self.connected:
                return
            await self._drop()
            # Every failure to connect is worth another try: a server restarting, a 502 from a
            # proxy, a slow first start of an npx package.  Bad configuration costs only the
            # few attempts.
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(self.retries), reraise=True,
                        wait=wait_exponential(multiplier=self.backoff, max=4.0)):
                    with attempt:
                        await self._connect_once()
            except ServerDown:
                raise
            except Exception as exc:
                raise ServerDown(f"cannot connect ({_reason(exc)})") from exc

    async def _connect_once(self) -> None:
        ready: asyncio.Future = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._hold(ready), name=f"mcp-{self.spec.name}")
        timeout = max(self.spec.timeout, CONNECT_TIMEOUT)
        try:
            await asyncio.wait_for(asyncio.shield(ready), timeout)
        except TimeoutError:
            await self._drop()
            raise ServerDown(f"no answer within {timeout:g} s while connecting") from None
        except BaseException:
            await self._drop()
            raise

    async def _hold(self, ready: asyncio.Future) -> None:
        """Open the session, list tools, then keep it open (listening for changes) until stopped."""
        stop = self._stop
        assert stop is not None  # set by _connect_once before this task starts
        errlog = None
        if not self.spec.url and self.stderr_path is not None:
            fd = os.open(self.stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            errlog = os.fdopen(fd, "w")
        try:
            async with Client(self._transport(errlog), message_handler=self._on_message, mode=self.mode,
                              client_info=mcp_types.Implementation(name="hermes-agent", version="1")) as client:
                self.client = client
                await self.refresh_tools()
                if not ready.done():
                    ready.set_result(None)
                listener = None
                if client.protocol_version in MODERN_PROTOCOL_VERSIONS and _announces_changes(client):
                    listener = asyncio.create_task(self._listen(client))
                await stop.wait()
                if listener is not None:
                    listener.cancel()
        except Exception as exc:  # noqa: BLE001 - reported to the connector, or ends the session
            if not ready.done():
                ready.set_exception(exc)
            else:
                log.info("MCP server %s disconnected (%s)", self.spec.name, type(exc).__name__)
        finally:
            self.client = None
            if errlog is not None:
                errlog.close()

    def _transport(self, errlog):
        spec = self.spec
        if spec.url:
            http = create_mcp_http_client(headers=spec.headers or None)
            return streamable_http_client(spec.url, http_client=http)
        params = StdioServerParameters(command=spec.command, args=list(spec.args), env=spec.env or None,
                                       cwd=spec.cwd or None)
        return stdio_client(params, errlog=errlog) if errlog else stdio_client(params)

    async def _on_message(self, message) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            log.info("MCP server %s changed its tools; listing them again", self.spec.name)
            asyncio.get_running_loop().create_task(self._refresh_quietly())

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    log.info("MCP server %s changed its tools; listing them again", self.spec.name)
                    await self._refresh_quietly()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - no change stream: the listing at connect stands
            log.info("MCP server %s: no tools/list_changed stream (%s)", self.spec.name, type(exc).__name__)

    async def _refresh_quietly(self) -> None:
        try:
            await asyncio.wait_for(self.refresh_tools(), self.spec.timeout)
        except Exception as exc:  # noqa: BLE001 - keep the last listing
            log.warning("MCP server %s: relisting tools failed (%s)", self.spec.name, type(exc).__name__)

    async def refresh_tools(self) -> None:
        """List every tool (all pages) and hand the listing to ``on_tools``."""
        client = self.client
        if client is None:
            raise ServerDown("not connected")
        tools, cursor = [], None
        for _ in range(MAX_TOOL_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        self.on_tools(self.spec.name, tools)

    async def call(self, tool: str, arguments: dict, timeout: float):
        """Call ``tool``; return its ``CallToolResult``.

        Raises:
            ServerDown: not connected and connecting failed, or the connection broke.
            TimeoutError: no answer within ``timeout`` seconds.
            ToolCallFailed: the server answered ``isError``.
        """
        await self.ensure_connected()
        client = self.client
        if client is None:
            raise ServerDown("not connected")
        try:
            result = await asyncio.wait_for(client.call_tool(tool, arguments), timeout)
        except TimeoutError:
            raise
        except MCPError as exc:
            if exc.code != CONNECTION_CLOSED:
                raise ServerDown(f"the server refused the call: {exc}") from exc
            await self._close_if_current(client)  # the next call starts a fresh session
            raise ServerDown("the connection closed (the server exited or hung up)") from exc
        except Exception as exc:
            await self._close_if_current(client)
            raise ServerDown(f"the connection failed ({type(exc).__name__})") from exc
        if result.is_error:
            raise ToolCallFailed(result_text(result) or "the tool failed")
        return result

    async def close(self) -> None:
        """Close the session (and stop a stdio server process)."""
        async with self._connect_lock:
            await self._drop()

    async def _close_if_current(self, client: Client) -> None:
        """Close the session ``client`` belongs to, unless another call already replaced it."""
        async with self._connect_lock:
            if self.client is client or self.client is None:
                await self._drop()

    async def _drop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        if self._stop is not None:
            self._stop.set()
        try:
            await asyncio.wait_for(task, CLOSE_TIMEOUT)
        except (TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001 - closing is best effort
            task.cancel()
        self.client = None


def _reason(exc: BaseException) -> str:
    """``Type: message`` of the first real failure inside (anyio task) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    message = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _announces_changes(client: Client) -> bool:
    tools = client.server_capabilities.tools
    return bool(tools and tools.list_changed)
