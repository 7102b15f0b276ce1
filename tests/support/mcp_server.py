"""A small real MCP server (the ``mcp`` SDK's ``MCPServer``, formerly FastMCP) for agent tests and
the MCP bench.

Run it over stdio (``python tests/support/mcp_server.py stdio``) or streamable HTTP
(``python tests/support/mcp_server.py http PORT``, endpoint ``http://127.0.0.1:PORT/mcp``).

Tools: ``add``, ``echo``, ``noop``, ``whoami`` and ``leak`` (read-only), ``slow`` (sleeps), ``crash`` (the
process exits), ``fail`` (an ``isError`` result), ``create_note`` (a write: no read-only
annotation), ``learn`` (adds a ``multiply`` tool and announces ``notifications/tools/list_changed``
in both protocol eras).

Credentials: ``whoami`` reports whether ``MCP_TEST_TOKEN`` in the server's environment equals
``s3cret-env``; over HTTP every request must carry ``Authorization: Bearer <MCP_TEST_HTTP_TOKEN>``
when that variable is set, else it gets 401.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)
server = MCPServer("hermes-test")


@server.tool(annotations=READ_ONLY)
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool(annotations=READ_ONLY)
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool(annotations=READ_ONLY)
def noop() -> str:
    """Do nothing (for overhead measurements)."""
    return ""


@server.tool(annotations=READ_ONLY)
def whoami() -> str:
    """Say whether the server got its credential."""
    return "authenticated" if os.environ.get("MCP_TEST_TOKEN") == "s3cret-env" else "anonymous"


@server.tool(annotations=READ_ONLY)
def leak() -> str:
    """Return the server's credential (a careless server; the agent must redact it)."""
    return os.environ.get("MCP_TEST_TOKEN", "")


@server.tool(annotations=READ_ONLY)
def slow(seconds: float) -> str:
    """Sleep ``seconds``, then answer."""
    time.sleep(seconds)
    return f"slept {seconds}"


@server.tool(annotations=READ_ONLY)
def crash() -> str:
    """Kill the server process."""
    os._exit(3)


@server.tool(annotations=READ_ONLY)
def fail(reason: str = "boom") -> str:
    """Always fail with ``reason`` (an ``isError`` result)."""
    raise ToolError(reason)


@server.tool()
def create_note(title: str) -> str:
    """Create a note (a write: it carries no read-only hint)."""
    return f"note created: {title}"


@server.tool(annotations=READ_ONLY)
async def learn(ctx: Context) -> str:
    """Add a ``multiply`` tool and tell the client its tool list changed."""
    def multiply(a: int, b: int) -> str:
        """Multiply two integers."""
        return str(a * b)

    server.add_tool(multiply, annotations=READ_ONLY)
    await ctx.notify_tools_changed()  # 2026-07-28 era: subscriptions/listen streams
    with contextlib.suppress(Exception):  # handshake era: a plain notification (absent later)
        await ctx.request_context.session.send_tool_list_changed()
    return "learned multiply"


def http_app(token: str = ""):
    """Return the streamable-HTTP ASGI app; requests need ``Bearer <token>`` when ``token``."""
    app = server.streamable_http_app()
    if not token:
        return app

    async def guarded(scope, receive, send):
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization", b"").decode() != f"Bearer {token}":
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body", "body": b"unauthorized"})
                return
        await app(scope, receive, send)
    return guarded


if __name__ == "__main__":
    if sys.argv[1:2] == ["http"]:
        import uvicorn

        uvicorn.run(http_app(os.environ.get("MCP_TEST_HTTP_TOKEN", "")), host="127.0.0.1",
                    port=int(sys.argv[2]), log_level="warning")
    else:
        server.run("stdio")
