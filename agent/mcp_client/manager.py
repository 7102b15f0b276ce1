"""The MCP manager: every MCP server of the tenant, behind a synchronous facade.

The agent's tool loop is synchronous (each tool call runs on its own thread), while the MCP SDK
is asyncio/anyio.  The manager runs one asyncio event loop on a dedicated daemon thread; the
sessions (``agent.mcp_client.connection``) live there, and ``call`` submits a coroutine and
waits for it (``asyncio.run_coroutine_threadsafe``).

Per server:
* its tools are registered in the runtime's tool registry as group ``<server>`` under
  ``<server>__<tool>`` names (``naming``), after the ``includeTools``/``excludeTools`` filters,
  and replaced whenever the server lists them again (``tools/list_changed``);
* a tool needs the user's confirmation (``Tool.confirm``) unless the server annotates it
  ``readOnlyHint: true`` - the MCP spec's default for an unannotated tool is "may write"
  (https://modelcontextprotocol.io/specification/2025-06-18/server/tools, ToolAnnotations) -
  or when the server's config lists it in ``writes``;
* a circuit breaker (pybreaker): ``fail_max`` consecutive failures (a timeout, a lost
  connection, a protocol error or an ``isError`` answer) open it for ``reset`` seconds, during
  which the server's tools answer ``"<server> is unavailable, try later"`` at once; the
  conversation goes on with the other tools.  A background task reconnects servers that are
  down every ``reset`` seconds.
Every text leaving the manager (tool results, errors, log lines) has the server's configured
secrets replaced by ``[redacted]`` (``config.redact``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pybreaker

from agent.mcp_client.config import ServerSpec, redact
from agent.mcp_client.naming import input_schema, result_text, tool_name
from agent.tools.registry import Tool, ToolError

if TYPE_CHECKING:
    from agent.mcp_client.connection import ServerConnection

log = logging.getLogger(__name__)

STDERR_DIR = "mcp_logs"  # <data_dir>/mcp_logs/<server>.stderr: what stdio servers print


@dataclass
class _Server:
    spec: ServerSpec
    connection: ServerConnection
    breaker: pybreaker.CircuitBreaker
    problem: str = ""  # why it is down ("" when connected or not tried yet)


class McpManager:
    """The tenant's MCP servers.

    Args:
        registry: the runtime's ``agent.tools.registry.LayeredRegistry`` (tools go in one group
            per server).
        data_dir: where stdio servers' stderr files go (``<data_dir>/mcp_logs``).
        fail_max, reset: breaker failures and open time (seconds).
        retries, backoff: connection attempts per call and the first wait between them (s).
        mode: protocol negotiation (``agent.mcp_client.connection.ServerConnection``).
    """

    def __init__(self, registry, *, data_dir: Path | None = None, fail_max: int = 5,
                 reset: float = 60.0, retries: int = 2, backoff: float = 0.2, mode: str = "auto"):
        self.registry = registry
        self.data_dir = Path(data_dir) if data_dir else None
        self.fail_max = fail_max
        self.reset = reset
        self.retries = retries
        self.backoff = backoff
        self.mode = mode
        self._servers: dict[str, _Server] = {}
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._reviver: asyncio.Task | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def reload(self, specs: dict[str, ServerSpec]) -> dict[str, str]:
        """Make the running servers match ``specs``: close removed or changed ones (their tools
        go), connect new ones and register their tools.  Blocks until every new server is
        connected or has failed (bounded by its timeout and retries).

        Returns:
            ``status()`` afterwards.
        """
        if not specs and self._loop is None:
            return {}
        with self._reload_lock:  # two pushes at once must not interleave their diffs
            self._reload(specs)
        return self.status()

    def _reload(self, specs: dict[str, ServerSpec]) -> None:
        self._ensure_loop()
        with self._lock:
            current = dict(self._servers)
        gone = [s for name, s in current.items() if specs.get(name) != s.spec]
        new = [spec for name, spec in specs.items() if name not in current or current[name] in gone]
        for server in gone:
            with self._lock:
                self._servers.pop(server.spec.name, None)
            self.registry.set_group(server.spec.name, [])
            try:
                self._run(server.connection.close(), timeout=10.0)
            except TimeoutError:
                log.warning("MCP server %s did not close within 10 s", server.spec.name)
            log.info("MCP server %s removed", server.spec.name)
        added = []
        # deferred: the MCP SDK (mcp, starlette, uvicorn: ~0.5 s); only agents with MCP servers pay
        from agent.mcp_client.connection import ServerConnection

        for spec in new:
            server = _Server(spec, ServerConnection(spec, self._on_tools, stderr_path=self._stderr(spec),
                                                    retries=self.retries, backoff=self.backoff,
                                                    mode=self.mode),
                             pybreaker.CircuitBreaker(fail_max=self.fail_max, reset_timeout=self.reset,
                                                      name=f"mcp-{spec.name}"))
            with self._lock:
                self._servers[spec.name] = server
            added.append(server)
        if added:
            budget = max(s.spec.connect_budget(self.retries) for s in added) + 5
            self._run(self._connect_all(added), timeout=budget)

    def status(self) -> dict[str, str]:
        """Return ``{server: ""}`` for a usable server, ``{server: reason}`` for one that is not."""
        with self._lock:
            servers = dict(self._servers)
        out = {}
        for name, server in servers.items():
            if server.breaker.current_state == pybreaker.STATE_OPEN:
                out[name] = f"unavailable after {self.fail_max} failures; retried in {self.reset:g} s"
            elif not server.connection.connected and server.problem:
                out[name] = server.problem
            else:
                out[name] = ""
        return out

    def close(self) -> None:
        """Close every session, stop the loop thread."""
        if self._loop is None:
            return
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            self.registry.set_group(server.spec.name, [])
        reviver = self._reviver

        async def close_all():
            if reviver is not None:
                reviver.cancel()
            await asyncio.gather(*([reviver] if reviver else []),
                                 *(s.connection.close() for s in servers), return_exceptions=True)

        try:
            self._run(close_all(), timeout=15.0)
        except TimeoutError:
            log.warning("MCP sessions did not close within 15 s")
        loop, self._loop, thread = self._loop, None, self._thread
        loop.call_soon_threadsafe(loop.stop)
        assert thread is not None  # started together with the loop
        thread.join(5.0)
        if not thread.is_alive():
            loop.close()

    # -- calls -------------------------------------------------------------------------------

    def call(self, server_name: str, tool: str, arguments: dict) -> str:
        """Call ``server_name``'s ``tool`` (its own, un-prefixed name); return the result text.

        Raises:
            ToolError: the server is unknown, unavailable (open breaker), timed out, failed,
                or the tool answered ``isError`` (the message is what the model should hear).
        """
        # deferred: connection loads the MCP SDK (~0.5 s); only agents with MCP servers get here
        from agent.mcp_client.connection import ServerDown, ToolCallFailed

        with self._lock:
            server = self._servers.get(server_name)
        if server is None:
            raise ToolError(f"{server_name} is no longer connected to this agent")
        spec = server.spec
        secrets = spec.secrets()
        wait = spec.connect_budget(self.retries) + spec.timeout + 2

        def attempt():
            yield self._run(server.connection.call(tool, arguments, spec.timeout), timeout=wait)

        try:
            steps = server.breaker.call(attempt)
            result = next(steps)
            for _ in steps:  # ends the generator: the breaker records the success
                pass
        except pybreaker.CircuitBreakerError:
            raise ToolError(f"{server_name} is unavailable, try later") from None
        except ToolCallFailed as exc:
            raise ToolError(redact(exc.text, secrets)) from None
        except TimeoutError:
            self._note(server, f"no answer within {spec.timeout:g} s")
            raise ToolError(f"{server_name} did not answer within {spec.timeout:g} s; "
                            "it may be unavailable, try later") from None
        except ServerDown as exc:
            reason = redact(str(exc), secrets)
            self._note(server, reason)
            raise ToolError(f"{server_name} is unavailable ({reason}), try later") from None
        server.problem = ""
        return redact(result_text(result), secrets)

    # -- internals ---------------------------------------------------------------------------

    def _note(self, server: _Server, reason: str) -> None:
        server.problem = reason
        log.warning("MCP server %s: %s", server.spec.name, reason)

    def _on_tools(self, server_name: str, listing: list) -> None:
        """Register ``server_name``'s tools (called on the loop thread with each listing)."""
        with self._lock:
            server = self._servers.get(server_name)
        if server is None:
            return
        spec = server.spec
        tools = []
        for item in listing:
            if not spec.offers(item.name):
                continue
            annotations = item.annotations
            read_only = bool(annotations and annotations.read_only_hint)
            tools.append(Tool(
                name=tool_name(spec.name, item.name),
                description=(item.description or item.title or item.name)[:1024],
                input_schema=input_schema(item.input_schema),
                handler=_handler(self, spec.name, item.name),
                timeout=spec.connect_budget(self.retries) + spec.timeout + 3,
                confirm=item.name in spec.writes or not read_only,
                source=spec.name, private=True))  # a connected service's data: agent.tools.egress
        self.registry.set_group(spec.name, tools)
        server.problem = ""
        log.info("MCP server %s (%s): %d tools offered", spec.name, spec.describe(), len(tools))

    async def _connect_all(self, servers: list[_Server]) -> None:
        # deferred: connection loads the MCP SDK (~0.5 s); only agents with MCP servers get here
        from agent.mcp_client.connection import ServerDown

        async def connect(server: _Server) -> None:
            try:
                await server.connection.ensure_connected()
            except ServerDown as exc:
                self._note(server, redact(str(exc), server.spec.secrets()))
        await asyncio.gather(*(connect(s) for s in servers))

    async def _revive(self) -> None:
        """Every ``reset`` seconds, reconnect servers that are down (crashed or never reached)."""
        while True:
            await asyncio.sleep(self.reset)
            with self._lock:
                down = [s for s in self._servers.values() if s.problem and not s.connection.connected]
            if down:
                await self._connect_all(down)

    def _stderr(self, spec: ServerSpec) -> Path | None:
        if spec.url or self.data_dir is None:
            return None
        folder = self.data_dir / STDERR_DIR
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder / f"{spec.name}.stderr"

    def _ensure_loop(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve():
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="mcp-loop", daemon=True)
        self._thread.start()
        started.wait(5.0)
        self._loop = loop

        async def start_reviver():
            self._reviver = asyncio.create_task(self._revive(), name="mcp-revive")
        self._run(start_reviver(), timeout=5.0)

    def _run(self, coro, *, timeout: float):
        """Run ``coro`` on the loop thread; return its result.

        Raises:
            TimeoutError: it took longer than ``timeout`` seconds (it is cancelled).
            whatever ``coro`` raised.
        """
        if self._loop is None:
            raise RuntimeError("the MCP loop is not running (start() first)")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no result within {timeout:g} s") from None


def _handler(manager: McpManager, server: str, tool: str):
    def handle(arguments: dict, ctx) -> str:
        return manager.call(server, tool, arguments)
    handle.__name__ = f"mcp_{server}_{tool}"
    return handle
