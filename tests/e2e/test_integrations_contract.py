"""Contract test per service (issue #13): each of the 14 services is connected through the
control plane's API (OAuth through the Composio stand-in's consent page, or an API key); the
``mcp_config`` envelope the control plane publishes is handed to a real agent runtime, which
reloads its MCP servers; then a conversation turn, with the Anthropic stand-in asking for the
service's three representative tools, calls them through the agent's tool loop and its MCP
client through the control plane's MCP proxy to the stand-in's user-scoped MCP endpoint.

One control plane, one Composio stand-in, one tenant and one in-process agent runtime serve
every service, so the whole matrix runs in seconds.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import urlsplit

import pytest
from support.dashboard import sign_in
from werkzeug.serving import make_server

from agent.config import AgentConfig
from agent.mcp_client.naming import tool_name
from agent.runtime import AgentRuntime
from agent.turn import TurnRunner
from control import create_app, integrations
from control.runtime import Runtime
from control.services.connections import MCP_SERVER_NAME, composio_user_id
from control.settings import Settings
from standins.anthropic_api import AnthropicStandin, text_reply, tool_reply
from standins.composio_api import ComposioStandin
from wire.protocol import Envelope, messages_stream, new_id

# A value of the right shape for each credential an API-key service asks for.
SAMPLE_CREDENTIALS = {"api_key": "sk_test_51ContractTestKey000000",
                      "connection_string": "postgresql://app:pw@db.internal:5432/app"}
SERVICES = list(integrations.load().values())


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    data = tmp_path_factory.mktemp("contract")
    with ComposioStandin(api_key="ak_contract") as composio, AnthropicStandin() as llm:
        # Served over HTTP: the agent reaches Composio through the control plane's MCP proxy.
        holder = {}
        # A lambda, not holder["app"]: the app is made below, once the server's port is known.
        server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start),  # noqa: PLW0108
                             threaded=True)
        settings = Settings(data_dir=str(data / "control"), composio_api_key=composio.api_key,
                            composio_api_base=composio.url, composio_webhook_secret="s",
                            public_url=f"http://127.0.0.1:{server.server_port}")
        app = holder["app"] = create_app(settings, Runtime(settings, upgrade_schema=True))
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        client = app.test_client()
        tenant = sign_in(client, "contract@example.com")
        page = client.get("/dashboard/connections").text
        csrf = page.split('data-csrf="', 1)[1].split('"', 1)[0]
        config = AgentConfig(tenant=str(tenant.id), data_dir=str(data / "agent"),
                             bus_url=f"sqlite:///{data / 'agent-bus.db'}", llm="anthropic",
                             anthropic_api_key="test-key", anthropic_base_url=llm.base_url,
                             memory_extraction=False, delta_interval=0.0, llm_backoff=0.0)
        agent = AgentRuntime(config, sleep=lambda seconds: None)
        try:
            yield composio, llm, app, client, tenant, {"X-CSRFToken": csrf}, agent
        finally:
            agent.close()
            server.shutdown()
            serving.join(timeout=10)
            app.extensions["hermes"].close()


def _connect(service, composio, client, headers) -> None:
    url = f"/api/hermes/connections/{service.key}"
    if service.auth == "api_key":
        body = {c.name: SAMPLE_CREDENTIALS[c.name] for c in service.credentials}
        answer = client.post(url, json=body, headers=headers)
        assert answer.status_code == 201 and answer.get_json()["status"] == "active", answer.text
        return
    answer = client.post(url, headers=headers)
    assert answer.status_code == 201, answer.text
    back = urlsplit(composio.approve(answer.get_json()["redirect_url"]).headers["location"])
    assert client.get(f"{back.path}?{back.query}").status_code == 302


def _latest_config(app, tenant) -> Envelope:
    """The newest ``mcp_config`` envelope the control plane published for ``tenant``."""
    bus = app.extensions["hermes"].bus
    latest = None
    for delivery in bus.read([messages_stream(str(tenant.id))], "contract", "probe", count=1000):
        envelope = Envelope.from_json(delivery.payload)
        if envelope.kind == "mcp_config":
            latest = envelope
    assert latest is not None, "no mcp_config envelope was published"
    return latest


def _say(agent, text: str) -> str:
    return TurnRunner(agent).handle(Envelope(id=new_id(), tenant=agent.config.tenant,
                                             channel="web", chat_id="contract", sender_id="u1",
                                             text=text))


@pytest.mark.parametrize("service", SERVICES, ids=[s.key for s in SERVICES])
def test_service_connects_and_the_agent_calls_its_three_tools(stack, service):
    composio, llm, app, client, tenant, headers, agent = stack
    _connect(service, composio, client, headers)
    TurnRunner(agent).handle(_latest_config(app, tenant))  # the agent applies the pushed servers
    names = [tool_name(MCP_SERVER_NAME, t.name) for t in service.tools]
    assert all(agent.registry.get(name) is not None for name in names), agent.mcp.status()
    for tool, name in zip(service.tools, names, strict=True):
        if tool.hint == "destructive":  # writes ask first; the user allowed them for good
            assert "allow" in _say(agent, f"/tools allow {name}")

    calls = [(name, dict.fromkeys(t.input_schema.get("required", []), "x"))
             for t, name in zip(service.tools, names, strict=True)]
    llm.script([tool_reply(*calls), text_reply(f"{service.name}: done")])
    assert _say(agent, f"use {service.name}") == f"{service.name}: done"

    content = llm.requests[-1]["json"]["messages"][-1]["content"]
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    assert [r["is_error"] for r in results] == [False, False, False], results
    answers = [json.loads(r["content"] if isinstance(r["content"], str) else r["content"][0]["text"])
               for r in results]
    account = composio.account_of(composio_user_id(tenant), service.toolkit)
    assert [a["data"]["tool"] for a in answers] == [t.name for t in service.tools]
    assert {a["data"]["connected_account_id"] for a in answers} == {account["id"]}
    calls = [c for c in composio.tool_calls if c["tool"] in {t.name for t in service.tools}]
    assert {c["user_id"] for c in calls} == {composio_user_id(tenant)} and len(calls) == 3


def test_a_disconnect_removes_the_services_tools_from_the_agent(stack):
    composio, _llm, app, client, tenant, headers, agent = stack
    services = integrations.load()
    github = services["github"]
    for key in ("github", "notion"):  # the matrix may not have connected it (yet, or run alone)
        if _status(client, key) != "active":
            _connect(services[key], composio, client, headers)
    assert client.delete("/api/hermes/connections/github", headers=headers).status_code == 200
    TurnRunner(agent).handle(_latest_config(app, tenant))
    offered = set(agent.registry.names())
    assert not {tool_name(MCP_SERVER_NAME, t.name) for t in github.tools} & offered
    assert tool_name(MCP_SERVER_NAME, "NOTION_SEARCH_NOTION_PAGE") in offered  # others stay


def _status(client, key: str) -> str:
    listing = client.get("/api/hermes/connections").get_json()["connections"]
    return next(c["status"] for c in listing if c["service"] == key)
