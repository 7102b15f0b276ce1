"""OpenAPI descriptions of the MCP proxy (``control/web/mcp_proxy.py``, issue #13), merged into
``control.web.openapi.OPERATIONS``."""

from __future__ import annotations

from control.errors import Unauthorized
from control.services.composio_client import IntegrationError
from control.web.openapi_parts import TOO_MANY_STREAMS, error, header

_PATH = "/mcp/tenants/<int:tenant_id>"
_AUTH = header("Authorization", "`Bearer <token>`: the tenant's current MCP proxy token, as "
                "pushed to its agent in the newest `mcp_config` (each push rotates it).",
                {"type": "string"})
_SESSION = {"name": "Mcp-Session-Id", "in": "header", "required": False,
            "description": "The MCP session, passed through both ways.", "schema": {"type": "string"}}
_VERSION = {"name": "MCP-Protocol-Version", "in": "header", "required": False,
            "description": "The MCP protocol version, passed through both ways.",
            "schema": {"type": "string"}}
_REFUSED = error("No bearer token, or not the tenant's current one; nothing is forwarded.",
                  Unauthorized.code, "bad_mcp_token")
_DOWN = error("Composio cannot be reached.", IntegrationError.code)
_ANSWER = {"description": "Composio's answer, streamed unbuffered with its status "
                          "(JSON-RPC as `application/json` or `text/event-stream`).",
           "content": {"application/json": {"schema": {}},
                       "text/event-stream": {"schema": {"type": "string"}}}}


def _operation(summary: str, **extra) -> dict:
    return {"summary": summary,
            "description": "The MCP streamable HTTP transport (spec 2025-06-18) of the tenant's "
                           "connected tools, proxied to their Composio session with the project "
                           "key added here, so agents never hold it.",
            "parameters": [_AUTH, _SESSION, _VERSION],
            "responses": {"default": _ANSWER, "401": _REFUSED, "429": TOO_MANY_STREAMS,
                          "502": _DOWN}, **extra}


OPERATIONS: dict[tuple[str, str], dict] = {
    (_PATH, "POST"): _operation("MCP proxy: send a JSON-RPC message", requestBody={
        "required": True, "content": {"application/json": {"schema": {"type": "object"}}}}),
    (_PATH, "GET"): _operation("MCP proxy: open the server's SSE stream"),
    (_PATH, "DELETE"): _operation("MCP proxy: end the MCP session"),
}
