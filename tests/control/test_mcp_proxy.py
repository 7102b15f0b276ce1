"""The control plane's MCP proxy (issue #13): the agent's pushed ``mcp_config`` carries only
our proxy URL and a per-tenant token, never Composio's project key; the proxy, served over
real HTTP, lets the ``mcp`` SDK client list and call the tenant's tools through it, refuses a
missing, wrong, rotated or other tenant's token without forwarding anything, and answers 502
when Composio cannot be reached."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from urllib.parse import urlsplit

import httpx
import mcp_types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from support.dashboard import sign_in
from werkzeug.serving import make_server

from control import create_app
from control.runtime import Runtime
from control.services import mcp_proxy
from control.services.composio_client import McpEndpoint
from control.services.connections import composio_user_id
from control.services.secrets_box import box_from_settings
from control.settings import Settings
from standins.composio_api import ComposioStandin
from wire.protocol import Envelope, messages_stream

# A JSON-RPC tools/call as an agent would POST it (the stand-in serves stateless sessions).
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": {"name": "GITHUB_SEARCH_REPOSITORIES", "arguments": {"q": "hermes"}}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}


@pytest.fixture(scope="module")
def composio():
    with ComposioStandin(api_key="ak_proxy_project_key_never_leaves") as standin:
        yield standin


@pytest.fixture
def served(tmp_path, composio):
    """The control app on a real 127.0.0.1 port (werkzeug, threaded); yields the app."""
    holder = {}
    # A lambda, not holder["app"]: the app is made below, once the server's port is known.
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start),  # noqa: PLW0108
                         threaded=True)
    public_url = f"http://127.0.0.1:{server.server_port}"
    settings = Settings(data_dir=str(tmp_path / "data"), public_url=public_url,
                        composio_api_key=composio.api_key, composio_api_base=composio.url,
                        composio_webhook_secret="s")
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app
    server.shutdown()
    thread.join(timeout=10)
    app.extensions["hermes"].close()


def _connect(app, composio, email: str, service: str = "github"):
    """Sign ``email`` up and connect ``service`` through the consent page; return the tenant."""
    client = app.test_client()
    tenant = sign_in(client, email)
    csrf = client.get("/dashboard/connections").text.split('data-csrf="', 1)[1].split('"', 1)[0]
    return tenant, client, csrf, _oauth(client, csrf, composio, service)


def _oauth(client, csrf, composio, service):
    answer = client.post(f"/api/hermes/connections/{service}", headers={"X-CSRFToken": csrf})
    assert answer.status_code == 201, answer.text
    back = urlsplit(composio.approve(answer.get_json()["redirect_url"]).headers["location"])
    assert client.get(f"{back.path}?{back.query}").status_code == 302


def _envelopes(app, tenant) -> list[Envelope]:
    bus = app.extensions["hermes"].bus
    found = [Envelope.from_json(d.payload) for d in
             bus.read([messages_stream(str(tenant.id))], "proxy-test", "probe", count=100)]
    return [e for e in found if e.kind == "mcp_config"]


def _server(envelope: Envelope) -> tuple[str, dict]:
    entry = envelope.mcp_servers["composio"]
    return entry["url"], entry["headers"]


def _post(url: str, authorization: str | None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if authorization is not None:
        headers["Authorization"] = authorization
    return httpx.post(url, headers=headers, json=CALL, timeout=10)


def test_pushed_config_holds_our_proxy_and_a_token_never_composios_key(served, composio):
    tenant, *_ = _connect(served, composio, "ada@example.com")
    [envelope] = _envelopes(served, tenant)
    wire = envelope.to_json()
    assert composio.api_key not in wire and composio.url not in wire and "x-api-key" not in wire
    url, headers = _server(envelope)
    public_url = served.extensions["hermes"].settings.public_url
    assert url == f"{public_url}/mcp/tenants/{tenant.id}"
    assert list(headers) == ["Authorization"] and headers["Authorization"].startswith("Bearer ")
    assert len(headers["Authorization"]) > len("Bearer ") + 40


def test_the_mcp_sdk_lists_and_calls_the_tenants_tools_through_the_proxy(served, composio):
    tenant, *_ = _connect(served, composio, "grace@example.com")
    url, headers = _server(_envelopes(served, tenant)[-1])

    async def session():
        http = create_mcp_http_client(headers=headers)
        async with Client(streamable_http_client(url, http_client=http)) as client:
            listed = await client.list_tools()
            result = await client.call_tool("GITHUB_SEARCH_REPOSITORIES", {"q": "hermes"})
            return [t.name for t in listed.tools], result

    names, result = asyncio.run(asyncio.wait_for(session(), 30))
    assert names == ["GITHUB_SEARCH_REPOSITORIES", "GITHUB_LIST_PULL_REQUESTS",
                     "GITHUB_CREATE_AN_ISSUE"]
    assert not result.is_error
    [text] = [c for c in result.content if isinstance(c, mcp_types.TextContent)]
    account = composio.account_of(composio_user_id(tenant), "github")
    assert json.loads(text.text)["data"]["connected_account_id"] == account["id"]
    assert composio.tool_calls[-1]["user_id"] == composio_user_id(tenant)


def test_missing_wrong_rotated_or_another_tenants_token_is_401_and_reaches_nobody(served, composio):
    tenant, client, csrf, _ = _connect(served, composio, "alice@example.com")
    old_url, old_headers = _server(_envelopes(served, tenant)[-1])
    _oauth(client, csrf, composio, "notion")  # a change pushes a new config with a new token
    url, headers = _server(_envelopes(served, tenant)[-1])
    assert url == old_url and headers != old_headers
    other, *_ = _connect(served, composio, "mallory@example.com")
    _other_url, other_headers = _server(_envelopes(served, other)[-1])

    calls = len(composio.tool_calls)
    for authorization in (None, "Bearer not-the-token", old_headers["Authorization"],
                          other_headers["Authorization"], headers["Authorization"][len("Bearer "):]):
        refused = _post(url, authorization)
        assert refused.status_code == 401, authorization
        assert refused.json()["error"] == "bad_mcp_token"
    assert httpx.get(url, headers={**MCP_HEADERS, **old_headers}, timeout=10).status_code == 401
    assert httpx.delete(url, headers=other_headers, timeout=10).status_code == 401
    assert len(composio.tool_calls) == calls  # Composio saw none of them

    allowed = _post(url, headers["Authorization"])
    assert allowed.status_code == 200, allowed.text
    assert composio.tool_calls[-1]["user_id"] == composio_user_id(tenant)
    assert allowed.headers["X-Accel-Buffering"] == "no"


def test_disconnecting_everything_revokes_the_token(served, composio):
    tenant, client, csrf, _ = _connect(served, composio, "linus@example.com")
    url, headers = _server(_envelopes(served, tenant)[-1])
    assert client.delete("/api/hermes/connections/github",
                         headers={"X-CSRFToken": csrf}).status_code == 200
    assert _envelopes(served, tenant)[-1].mcp_servers == {}
    assert _post(url, headers["Authorization"]).status_code == 401


def test_composio_unreachable_is_a_502(served):
    tenant = sign_in(served.test_client(), "offline@example.com")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens on it now
    settings = served.extensions["hermes"].settings
    with served.app_context():
        token = mcp_proxy.rotate(tenant, McpEndpoint(f"http://127.0.0.1:{port}/mcp", {}),
                                 box_from_settings(settings), deliver=lambda token: None)
    answer = _post(mcp_proxy.proxy_url(settings.public_url, tenant.id), f"Bearer {token}")
    assert answer.status_code == 502
    assert answer.json()["error"] == "integration_provider_error"


def test_a_canceled_tenant_is_refused_and_deleting_the_account_removes_its_connections(served,
                                                                                       composio):
    from control.db import database
    from control.models import Connection, Tenant
    from control.services import lifecycle

    tenant, _client, _csrf, _ = _connect(served, composio, "grace@example.com")
    url, headers = _server(_envelopes(served, tenant)[-1])
    assert _post(url, headers["Authorization"]).status_code == 200
    with database.connection_context():
        [row] = Connection.select().where(Connection.tenant == tenant.id)
        account_id = row.composio_account_id
        assert account_id in composio.accounts
        Tenant.update(status="canceled").where(Tenant.id == tenant.id).execute()
    # A paused or ended subscription's agent cannot use the connections.
    assert _post(url, headers["Authorization"]).status_code == 401

    with database.connection_context():
        lifecycle.delete_tenant_data(Tenant.get_by_id(tenant.id), served.extensions["hermes"])
        assert Connection.select().where(Connection.tenant == tenant.id).count() == 0
        assert Tenant.get_by_id(tenant.id).mcp_token_hash is None
    assert account_id not in composio.accounts  # the grant is gone at Composio too


def _bus_down(*args, **kwargs):
    from wire.errors import BusUnavailable

    raise BusUnavailable("bus is down")


def test_a_config_that_never_reached_the_bus_leaves_the_agents_token_working(served, composio,
                                                                             monkeypatch):
    tenant, client, csrf, _ = _connect(served, composio, "ada@example.com")
    url, headers = _server(_envelopes(served, tenant)[-1])
    monkeypatch.setattr(served.extensions["hermes"].bus, "append", _bus_down)
    _oauth(client, csrf, composio, "notion")  # stored, but its mcp_config could not be sent
    monkeypatch.undo()
    assert _envelopes(served, tenant) == []
    allowed = _post(url, headers["Authorization"])  # the token the agent holds still works
    assert allowed.status_code == 200, allowed.text


def test_both_tokens_work_while_the_new_one_is_on_its_way_then_only_the_new_one(served, composio):
    from control.db import database
    from control.services.connections import from_runtime

    tenant, *_ = _connect(served, composio, "grace@example.com")
    url, headers = _server(_envelopes(served, tenant)[-1])
    connections = from_runtime(served.extensions["hermes"])
    seen = {}

    def deliver(token):  # what the agent could do the instant it read the envelope
        seen["new"] = _post(url, f"Bearer {token}").status_code
        seen["old"] = _post(url, headers["Authorization"]).status_code

    with database.connection_context():
        endpoint = connections.provider.mcp_endpoint(composio_user_id(tenant),
                                                     [_github_service()])
        token = mcp_proxy.rotate(tenant, endpoint, connections.box, deliver)
    assert seen == {"new": 200, "old": 200}
    assert _post(url, headers["Authorization"]).status_code == 401
    assert _post(url, f"Bearer {token}").status_code == 200


def _github_service():
    from control import integrations

    return integrations.load()["github"]


def test_an_agent_reporting_ready_is_sent_its_config_again(served, composio):
    from control.db import database
    from control.models import Machine
    from control.services.delivery import DeliveryWorker
    from wire.protocol import DELIVERY_GROUP, Event, events_stream

    tenant, *_ = _connect(served, composio, "restored@example.com")
    url, headers = _server(_envelopes(served, tenant)[-1])
    runtime = served.extensions["hermes"]
    stream = events_stream(str(tenant.id))
    with database.connection_context():
        Machine.create(tenant=tenant.id, plan="light", state="booting")
        # A restored (or restarted) agent reports ready.
        runtime.bus.append(stream, Event.lifecycle_event(str(tenant.id), "ready", "restored").to_json())
        worker = DeliveryWorker(runtime.bus, runtime.tasks.adapters, lambda: [tenant.id], tenant_refresh=0.0,
                                on_ready=runtime.tasks.agent_ready)
        for _ in range(50):
            if worker.step(block=0.05) == 0 and runtime.bus.pending_count(stream, DELIVERY_GROUP) == 0:
                break
        assert Machine.get(Machine.tenant == tenant.id).state == "ready"
    while (task := runtime.huey.dequeue()) is not None:  # the control plane's Huey consumer
        runtime.huey.execute(task)

    [envelope] = _envelopes(served, tenant)
    _url, new_headers = _server(envelope)
    assert _post(url, new_headers["Authorization"]).status_code == 200
    assert _post(url, headers["Authorization"]).status_code == 401
