"""``/mcp/tenants/<id>``: the MCP proxy an agent uses instead of Composio (issue #13).

MCP streamable HTTP transport (https://modelcontextprotocol.io/specification/2025-06-18/
basic/transports#streamable-http): POST carries JSON-RPC and is answered with JSON or an SSE
stream; GET opens an SSE stream; DELETE ends the session.  The handler checks the tenant's
proxy token (``control.services.mcp_proxy.authenticate``; 401 and nothing forwarded
otherwise), then forwards the request to the tenant's Composio session with the project key
added, and streams the answer back unbuffered.  Neither bodies nor headers are logged.
CSRF-exempt: the caller is an agent with a bearer token, not a browser session.
"""

from __future__ import annotations

import logging

import httpx
from flask import Blueprint, Response, request, stream_with_context

from control.services import mcp_proxy
from control.services.composio_client import IntegrationError
from control.services.secrets_box import box_from_settings
from control.web import runtime
from control.web.auth import csrf, stream_cap

log = logging.getLogger(__name__)

bp = Blueprint("mcp_proxy", __name__)
csrf.exempt(bp)  # tenant agents authenticate with their bearer token

# Request headers of the transport passed on to Composio (everything else, notably the
# agent's Authorization, stays here); the spec's names, matched case-insensitively.
FORWARD_REQUEST = ("content-type", "accept", "mcp-session-id", "mcp-protocol-version",
                   "last-event-id")
# Answer headers passed back to the agent.
FORWARD_RESPONSE = ("content-type", "mcp-session-id", "mcp-protocol-version")
# Seconds: connecting to Composio; between two bytes of an answer (a GET stream may idle
# for a while between server messages, nginx's /mcp/ read timeout is longer still).
TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=30.0, pool=10.0)

_client = httpx.Client(timeout=TIMEOUT, follow_redirects=False)


@bp.route("/mcp/tenants/<int:tenant_id>", methods=["POST", "GET", "DELETE"])
def proxy(tenant_id: int):
    """Forward one MCP transport request of tenant ``tenant_id`` to Composio.

    Returns:
        Composio's status, transport headers and body, streamed.

    Raises:
        Unauthorized: no bearer token or not the tenant's current one (401, nothing sent).
        TooManyRequests: the tenant has ``streams_per_tenant`` calls open already (429).
        IntegrationError: Composio cannot be reached (502).
    """
    box = box_from_settings(runtime().settings)
    upstream = mcp_proxy.authenticate(tenant_id, request.headers.get("Authorization", ""), box)
    headers = {name: request.headers[name] for name in FORWARD_REQUEST if name in request.headers}
    headers.update(upstream.headers)
    outgoing = _client.build_request(request.method, upstream.url, headers=headers,
                                     content=request.get_data() if request.method == "POST" else None)
    release = stream_cap.take_slot(tenant_id)  # 429 beyond the tenant's cap
    try:
        answer = _client.send(outgoing, stream=True)
    except httpx.HTTPError as exc:
        release()
        log.warning("MCP proxy for tenant %s: Composio unreachable (%s)", tenant_id,
                    type(exc).__name__)
        raise IntegrationError("Composio cannot be reached just now; please try again.") from None

    def body():
        try:
            yield from answer.iter_raw()
        except httpx.HTTPError as exc:  # the stream broke midway: end ours, the client retries
            log.info("MCP proxy for tenant %s: stream ended (%s)", tenant_id, type(exc).__name__)
        finally:
            answer.close()

    passed = {name: answer.headers[name] for name in FORWARD_RESPONSE if name in answer.headers}
    passed["X-Accel-Buffering"] = "no"  # nginx: hand each event on as it comes
    passed["Cache-Control"] = "no-store"
    return stream_cap.held_while_open(
        Response(stream_with_context(body()), status=answer.status_code, headers=passed), release)
