"""A local stand-in of Composio: its v3.1 REST API, hosted OAuth consent page, webhooks and
the user-scoped MCP endpoint (issue #13).

The real ``composio`` SDK runs against it unchanged (``Composio(api_key=..., base_url=url)``)::

    with ComposioStandin(api_key="ak_test", webhook_url=..., webhook_secret=...) as composio:
        ...

Wire format (https://docs.composio.dev/reference): header ``x-api-key`` (wrong or missing:
401 ``{"error": {"message", "code", "status"}}``), JSON bodies, list answers ``{"items",
"next_cursor", "total_pages", "current_page", "total_items"}``, snake_case fields.  Endpoints
served are those ``control/services/composio_client.py`` documents; connected accounts carry
``status`` ``INITIATED`` -> ``ACTIVE`` | ``FAILED`` | ``EXPIRED`` and never echo credentials.

Hosted consent (LOCAL TEST MODE): a link's ``redirect_url`` is ``/link/<token>``, a page with
Approve and Deny buttons; approving makes the account ``ACTIVE`` and answers 303 to the
``callback_url`` with ``status=success&connected_account_id=<id>`` (deny: ``status=failed``).

Webhooks (``expire``, ``send_event``) are V3 payloads shaped like the published
``composio.connected_account.expired`` example (standins/payloads/composio), signed per
Standard Webhooks as Composio documents: ``webhook-id``, ``webhook-timestamp`` (Unix seconds),
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` keyed with the
webhook secret's text, and ``x-composio-webhook-version: V3``.

MCP: a tool-router session's ``mcp.url`` is ``/tool_router/<session id>/mcp``, a streamable
HTTP MCP server (the ``mcp`` SDK's low-level ``Server``).  It lists, for the session's user
only, the enabled tools of the toolkits that user has an ``ACTIVE`` account of, with the
catalogue's descriptions, schemas and hints (``control/integrations/services.yaml``), and a
call answers a JSON text naming the tool, user, account and arguments.  Calls are kept in
``tool_calls``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import html
import itertools
import json
import secrets
import socket
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urlencode

import httpx
import mcp_types as types
import uvicorn
from mcp.server.lowlevel import Server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.routing import Mount, Route

from control import integrations


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``webhook-signature`` value of ``body`` (``v1,<base64 HMAC-SHA256>``)."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status, "status": status}},
                        status_code=status)


class ComposioStandin:
    """The stand-in server (uvicorn in a daemon thread on a free local port).

    Args:
        api_key: the project API key every request must carry as ``x-api-key``.
        webhook_url: where ``expire``/``send_event`` deliver (None: no webhooks).
        webhook_secret: the webhook signing secret.

    Attributes:
        url: base URL once started.
        tool_calls: ``[{"user_id", "tool", "arguments"}]`` of every MCP tool call.
        received_credentials: ``{account id: credentials}`` of API-key connections (what the
            real Composio would store), so tests can check the key arrived.
        deliveries: ``[(headers, body)]`` of every webhook sent.
    """

    def __init__(self, api_key: str = "ak_standin_project_key", webhook_url: str | None = None,
                 webhook_secret: str = ""):
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.url = ""
        self.auth_configs: dict[str, dict] = {}
        self.accounts: dict[str, dict] = {}
        self.links: dict[str, str] = {}  # link token -> account id
        self.sessions: dict[str, dict] = {}
        self.tool_calls: list[dict] = []
        self.received_credentials: dict[str, dict] = {}
        self.deliveries: list[tuple[dict, bytes]] = []
        self._ids = itertools.count(1)
        self._lock = threading.RLock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._mcp = Server("composio-standin", on_list_tools=self._list_tools,
                           on_call_tool=self._call_tool)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving; return the base URL."""
        mcp_app = self._mcp.streamable_http_app(streamable_http_path="/mcp", stateless_http=True,
                                                json_response=True)

        @contextlib.asynccontextmanager
        async def lifespan(_app):
            async with self._mcp.session_manager.run():
                yield

        api = "/api/v3.1"
        app = Starlette(routes=[
            Route(f"{api}/auth_configs", self._auth_configs, methods=["GET", "POST"]),
            Route(f"{api}/connected_accounts/link", self._link, methods=["POST"]),
            Route(f"{api}/connected_accounts", self._accounts, methods=["GET", "POST"]),
            Route(f"{api}/connected_accounts/{{account_id}}", self._account,
                  methods=["GET", "DELETE"]),
            Route(f"{api}/tool_router/session", self._session, methods=["POST"]),
            Route("/link/{token}", self._consent, methods=["GET", "POST"]),
            Mount("/tool_router/{session_id}", app=mcp_app),
        ], lifespan=lifespan)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="composio-standin", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("Composio stand-in did not start")
            time.sleep(0.01)
        return self.url

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- state helpers ---------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):04d}{secrets.token_hex(4)}"

    def _authorized(self, request: Request) -> bool:
        return hmac.compare_digest(request.headers.get("x-api-key", ""), self.api_key)

    def _public(self, account: dict) -> dict:
        config = self.auth_configs[account["auth_config_id"]]
        return {"id": account["id"], "user_id": account["user_id"], "status": account["status"],
                "status_reason": account.get("status_reason"),
                "toolkit": {"slug": account["toolkit"]},
                "auth_config": {"id": config["id"], "auth_scheme": config["auth_scheme"],
                                "is_composio_managed": config["is_composio_managed"],
                                "is_disabled": False},
                "is_disabled": False, "created_at": account["created_at"],
                "updated_at": account["updated_at"]}

    def set_status(self, account_id: str, status: str, reason: str | None = None) -> None:
        """Change an account's status as Composio would (e.g. ``EXPIRED``), without a webhook."""
        with self._lock:
            account = self.accounts[account_id]
            account.update(status=status, status_reason=reason, updated_at=_now_iso())

    def remove(self, account_id: str) -> None:
        """Delete an account on Composio's side (e.g. the user revoked it there)."""
        with self._lock:
            self.accounts.pop(account_id, None)

    def account_of(self, user_id: str, toolkit: str) -> dict | None:
        """The newest account of ``user_id`` for ``toolkit`` (a copy), or None."""
        with self._lock:
            found = [a for a in self.accounts.values()
                     if a["user_id"] == user_id and a["toolkit"] == toolkit]
            return dict(found[-1]) if found else None

    # --- REST ------------------------------------------------------------------------------

    async def _auth_configs(self, request: Request):
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        if request.method == "GET":
            slug = request.query_params.get("toolkit_slug")
            with self._lock:
                items = [c for c in self.auth_configs.values() if not slug or c["toolkit"]["slug"] == slug]
            return JSONResponse({"items": items, "next_cursor": None, "total_pages": 1,
                                 "current_page": 1, "total_items": len(items)})
        body = await request.json()
        slug = (body.get("toolkit") or {}).get("slug")
        spec = body.get("auth_config") or {"type": "use_composio_managed_auth"}
        if integrations.by_toolkit(slug or "") is None:
            return _error(400, f"Toolkit {slug!r} not found")
        managed = spec.get("type") == "use_composio_managed_auth"
        config = {"id": self._new_id("ac"), "toolkit": {"slug": slug}, "status": "ENABLED",
                  "auth_scheme": "OAUTH2" if managed else spec.get("auth_scheme", "API_KEY"),
                  "is_composio_managed": managed, "name": f"{slug} auth config"}
        with self._lock:
            self.auth_configs[config["id"]] = config
        return JSONResponse({"auth_config": {k: config[k] for k in
                                             ("id", "auth_scheme", "is_composio_managed")},
                             "toolkit": {"slug": slug}}, status_code=201)

    def _new_account(self, user_id: str, config: dict, status: str, **extra) -> dict:
        now = _now_iso()
        account = {"id": self._new_id("ca"), "user_id": user_id, "toolkit": config["toolkit"]["slug"],
                   "auth_config_id": config["id"], "status": status, "created_at": now,
                   "updated_at": now, **extra}
        self.accounts[account["id"]] = account
        return account

    async def _link(self, request: Request):
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        body = await request.json()
        with self._lock:
            config = self.auth_configs.get(body.get("auth_config_id", ""))
            if config is None or not body.get("user_id"):
                return _error(400, "auth_config_id and user_id are required")
            account = self._new_account(body["user_id"], config, "INITIATED",
                                        callback_url=body.get("callback_url"))
            token = secrets.token_urlsafe(16)
            self.links[token] = account["id"]
        return JSONResponse({"connected_account_id": account["id"], "link_token": token,
                             "redirect_url": f"{self.url}/link/{token}",
                             "expires_at": _now_iso()}, status_code=201)

    async def _accounts(self, request: Request):
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        if request.method == "GET":
            users = set(request.query_params.getlist("user_ids"))
            statuses = set(request.query_params.getlist("statuses"))
            configs = set(request.query_params.getlist("auth_config_ids"))
            with self._lock:
                items = [self._public(a) for a in self.accounts.values()
                         if (not users or a["user_id"] in users)
                         and (not statuses or a["status"] in statuses)
                         and (not configs or a["auth_config_id"] in configs)]
            return JSONResponse({"items": items, "next_cursor": None, "total_pages": 1,
                                 "current_page": 1, "total_items": len(items)})
        body = await request.json()
        connection = body.get("connection") or {}
        state = connection.get("state") or {}
        with self._lock:
            config = self.auth_configs.get((body.get("auth_config") or {}).get("id", ""))
            if config is None or not connection.get("user_id"):
                return _error(400, "auth_config.id and connection.user_id are required")
            if state.get("authScheme") != "API_KEY":  # the wire name (SDK alias)
                return _error(400, "this stand-in creates API_KEY connections only")
            credentials = {k: v for k, v in (state.get("val") or {}).items() if k != "status"}
            if not credentials:
                return _error(400, "state.val holds no credential")
            account = self._new_account(connection["user_id"], config, "ACTIVE")
            self.received_credentials[account["id"]] = credentials
        return JSONResponse({"id": account["id"], "status": "ACTIVE",
                             "connection_data": {"auth_scheme": "API_KEY",
                                                 "val": {"status": "ACTIVE"}}}, status_code=201)

    async def _account(self, request: Request):
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        account_id = request.path_params["account_id"]
        with self._lock:
            account = self.accounts.get(account_id)
            if account is None:
                return _error(404, f"Connected account {account_id} not found")
            if request.method == "DELETE":
                del self.accounts[account_id]
                return JSONResponse({"success": True})
            return JSONResponse(self._public(account))

    async def _session(self, request: Request):
        if not self._authorized(request):
            return _error(401, "Invalid API key")
        body = await request.json()
        if not body.get("user_id"):
            return _error(400, "user_id is required")
        toolkits = list((body.get("toolkits") or {}).get("enable", []))
        tools = {slug: list((spec or {}).get("enable", [])) for slug, spec in
                 (body.get("tools") or {}).items()}
        session_id = self._new_id("trs")
        with self._lock:
            self.sessions[session_id] = {"user_id": body["user_id"], "toolkits": toolkits,
                                         "tools": tools}
        return JSONResponse({"session_id": session_id, "config_version": 1,
                             "mcp": {"type": "http", "url": f"{self.url}/tool_router/{session_id}/mcp"},
                             "config": {"user_id": body["user_id"],
                                        "toolkits": {"enabled": toolkits}},
                             "tool_router_tools": []}, status_code=201)

    # --- hosted consent page ---------------------------------------------------------------

    async def _consent(self, request: Request):
        token = request.path_params["token"]
        with self._lock:
            account = self.accounts.get(self.links.get(token, ""))
        if account is None or account["status"] != "INITIATED":
            return HTMLResponse("<h1>This link has expired.</h1>", status_code=404)
        if request.method == "GET":
            name = html.escape(account["toolkit"])
            page = (f"<!doctype html><title>Connect {name}</title><p><b>LOCAL TEST MODE</b> — "
                    f"Composio stand-in</p><h1>Allow Hermes Max to use your {name} account?</h1>"
                    f'<form method="post"><button name="decision" value="approve">Approve</button>'
                    f'<button name="decision" value="deny">Deny</button></form>')
            return HTMLResponse(page)
        form = await request.form()
        approved = form.get("decision") == "approve"
        self.set_status(account["id"], "ACTIVE" if approved else "FAILED",
                        None if approved else "user denied access")
        with self._lock:
            self.links.pop(token, None)
        query = urlencode({"status": "success" if approved else "failed",
                           "connected_account_id": account["id"]})
        callback = account.get("callback_url") or self.url
        return RedirectResponse(f"{callback}{'&' if '?' in callback else '?'}{query}", status_code=303)

    def approve(self, redirect_url: str) -> httpx.Response:
        """Press Approve on the consent page at ``redirect_url``; return the 303 answer."""
        return httpx.post(redirect_url, data={"decision": "approve"}, timeout=10)

    # --- webhooks --------------------------------------------------------------------------

    def send_event(self, event: dict, webhook_id: str | None = None,
                   timestamp: int | None = None) -> httpx.Response:
        """Deliver ``event`` to ``webhook_url`` signed like Composio; return the answer."""
        body = json.dumps(event).encode()
        webhook_id = webhook_id or event.get("id") or f"msg_{secrets.token_hex(8)}"
        timestamp = int(time.time()) if timestamp is None else timestamp
        headers = {"content-type": "application/json", "webhook-id": webhook_id,
                   "webhook-timestamp": str(timestamp),
                   "webhook-signature": sign(self.webhook_secret, webhook_id, timestamp, body),
                   "x-composio-webhook-version": "V3"}
        self.deliveries.append((headers, body))
        return httpx.post(self.webhook_url, content=body, headers=headers, timeout=10)

    def expired_event(self, account_id: str, reason: str = "OAuth refresh token expired") -> dict:
        """The ``composio.connected_account.expired`` V3 payload of ``account_id``."""
        with self._lock:
            account = self.accounts[account_id]
            config = self.auth_configs[account["auth_config_id"]]
        return {"id": f"msg_{secrets.token_hex(12)}", "type": "composio.connected_account.expired",
                "metadata": {"project_id": "pr_standin", "org_id": "ok_standin"},
                "data": {"id": account_id, "toolkit": {"slug": account["toolkit"]},
                         "auth_config": {"id": config["id"], "auth_scheme": config["auth_scheme"]},
                         "status": "EXPIRED", "status_reason": reason},
                "timestamp": _now_iso()}

    def expire(self, account_id: str) -> httpx.Response:
        """Expire ``account_id`` and deliver its ``composio.connected_account.expired`` webhook."""
        self.set_status(account_id, "EXPIRED", "OAuth refresh token expired")
        return self.send_event(self.expired_event(account_id))

    # --- MCP -------------------------------------------------------------------------------

    def _session_of(self, ctx) -> dict | None:
        request = ctx.request
        if request is None or not self._authorized(request):
            return None
        parts = request.url.path.strip("/").split("/")
        session_id = parts[1] if len(parts) >= 2 and parts[0] == "tool_router" else ""
        with self._lock:
            return self.sessions.get(session_id)

    def tools_for(self, session: dict) -> dict[str, tuple[dict, integrations.Tool]]:
        """``{tool name: (account, Tool)}`` the session's user may call now."""
        offered = {}
        with self._lock:
            active = {a["toolkit"]: dict(a) for a in self.accounts.values()
                      if a["user_id"] == session["user_id"] and a["status"] == "ACTIVE"}
        for slug in session["toolkits"]:
            service = integrations.by_toolkit(slug)
            if service is None or slug not in active:
                continue
            enabled = session["tools"].get(slug)
            for tool in service.tools:
                if enabled is None or tool.name in enabled:
                    offered[tool.name] = (active[slug], tool)
        return offered

    async def _list_tools(self, ctx, params) -> types.ListToolsResult:
        session = self._session_of(ctx)
        if session is None:
            raise PermissionError("unknown session or invalid API key")
        return types.ListToolsResult(tools=[
            types.Tool(name=tool.name, description=tool.description, input_schema=tool.input_schema,
                       annotations=types.ToolAnnotations(read_only_hint=tool.hint == "readOnly",
                                                         destructive_hint=tool.hint == "destructive"))
            for _account, tool in self.tools_for(session).values()])

    async def _call_tool(self, ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        session = self._session_of(ctx)
        if session is None:
            raise PermissionError("unknown session or invalid API key")
        found = self.tools_for(session).get(params.name)
        if found is None:
            return types.CallToolResult(is_error=True, content=[types.TextContent(
                text=f"Tool {params.name} is not available: its toolkit is not connected.")])
        account, _tool = found
        call = {"user_id": session["user_id"], "tool": params.name,
                "arguments": dict(params.arguments or {})}
        with self._lock:
            self.tool_calls.append(call)
        result = {"successful": True, "data": {"tool": params.name, "connected_account_id": account["id"],
                                                "arguments": call["arguments"]}, "error": None}
        return types.CallToolResult(content=[types.TextContent(text=json.dumps(result))])
