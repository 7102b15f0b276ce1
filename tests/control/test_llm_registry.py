"""The LLM backend registry (issue 23): the agent's router names why each call went to its
backend, the gateway records it, a periodic probe checks each provider route, and operators
read health, error rate, latency and the selection history on /ops/llm and /metrics.  Real
HTTP throughout: the agent's own backends and router in front of the gateway, the gateway in
front of the providers' stand-ins."""

from __future__ import annotations

import dataclasses
import json
import re
import socket

import httpx
import pyotp
import pytest
from click.testing import CliRunner
from support.live_app import live_app

from agent.llm.anthropic_backend import AnthropicBackend
from agent.llm.openai_backend import OpenAICompatBackend
from agent.llm.router import Router
from agent.usage import UsageLedger
from cli.main import cli
from control.db import database
from control.models import LlmBackendHealth, LlmCall, Tenant, utcnow
from control.services import llm_gateway, llm_registry, operators
from control.services.audit import Actor
from control.settings import Settings
from standins.anthropic_api import AnthropicStandin, error_reply, text_reply
from standins.openai_api import OpenAIStandin
from standins.openai_api import text_reply as openai_reply
from wire.route_reasons import ROUTE_REASON_HEADER

PASSWORD = "correct horse battery"


@pytest.fixture
def served(tmp_path):
    """Claude and OpenAI-compatible stand-ins behind the control app on a real port; yields
    ``(public_url, runtime, claude, openai_api)``."""
    with AnthropicStandin() as claude, OpenAIStandin() as openai_api:
        def settings_for(public_url: str) -> Settings:
            return Settings(data_dir=str(tmp_path / "data"), public_url=public_url,
                            llm_anthropic_api_key="sk-ant-operator", llm_anthropic_url=claude.base_url,
                            llm_openai_url=openai_api.base_url, llm_openai_api_key="sk-or-operator",
                            llm_transcribe_url=openai_api.base_url, llm_transcribe_api_key="sk-w",
                            agent_env={"HERMES_OPENAI_MODEL": "qwen/qwen3-8b"})

        with live_app(settings_for) as (url, runtime):
            yield url, runtime, claude, openai_api


def _token(runtime) -> str:
    with runtime.db.connection_context():
        row = Tenant.create(email=f"heavy-{utcnow().timestamp()}@example.com", plan="heavy", status="active")
        return llm_gateway.issue(row.id)


def _calls(runtime) -> list[tuple[str, int, str]]:
    with runtime.db.connection_context():
        return [(c.api, c.status, c.reason) for c in LlmCall.select().order_by(LlmCall.id)]


def _operator_client(url: str, runtime) -> httpx.Client:
    with database.connection_context():
        _op, uri = operators.add("ops@example.com", "viewer", PASSWORD, runtime.secrets_box,
                                 Actor(name="test", role="cli", source="test"))
    client = httpx.Client(base_url=url)
    page = client.get("/ops/login").text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    signed = client.post("/ops/login", data={"csrf_token": token, "email": "ops@example.com",
                                             "password": PASSWORD,
                                             "totp": pyotp.TOTP(pyotp.parse_uri(uri).secret).now()})
    assert signed.status_code == 303
    return client


def test_operators_see_health_performance_and_why_each_call_went_where_it_did(served, tmp_path, monkeypatch):
    url, runtime, claude, openai_api = served
    token = _token(runtime)
    router = Router([AnthropicBackend(token, base_url=url + llm_gateway.ANTHROPIC_PATH, model="claude-haiku-4-5"),
                     OpenAICompatBackend(base_url=url + llm_gateway.OPENAI_PATH, api_key=token,
                                         model="qwen/qwen3-8b")],
                    UsageLedger(tmp_path / "usage.db"), "t1", retries=1, sleep=lambda s: None)

    claude.script([error_reply(500)])
    openai_api.script([openai_reply("The open model answered.")])
    assert router.complete("hello") == "The open model answered."
    claude.script([text_reply("Claude answered.")])
    assert router.complete("hello again") == "Claude answered."
    assert _calls(runtime) == [("anthropic", 500, "primary"), ("openai", 200, "fallback_error"),
                               ("anthropic", 200, "primary")]

    with runtime.db.connection_context():
        assert llm_registry.probe(runtime.settings) == {"anthropic": True, "openai": True, "transcription": True}
        [claude_stats, open_stats] = llm_registry.stats()
    assert (claude_stats.api, claude_stats.model, claude_stats.calls, claude_stats.errors) == (
        "anthropic", "claude-haiku-4-5", 2, 1)
    assert claude_stats.error_rate == 0.5 and claude_stats.healthy is True
    assert (open_stats.api, open_stats.calls, open_stats.errors) == ("openai", 1, 0)

    ops = _operator_client(url, runtime)
    page = ops.get("/ops/llm")
    assert page.status_code == 200
    html = page.text
    assert re.search(r'data-testid="health-anthropic">.*?healthy', html, re.S)
    row = re.search(r'data-testid="backend-anthropic-claude-haiku-4-5">(.*?)</tr>', html, re.S).group(1)
    assert re.findall(r"<td>([^<]*)</td>", row)[:4] == ["claude-haiku-4-5", "2", "1", "50 %"]
    assert re.search(r'data-testid="reason-fallback_error"><th scope="row">fallback_error</th><td>1</td>', html)
    assert html.count('data-testid="selection"') == 3
    assert httpx.get(f"{url}/ops/llm").status_code == 404  # invisible to anyone else

    metrics = httpx.get(f"{url}/metrics").text
    assert 'hermes_llm_backend_up{api="anthropic"} 1.0' in metrics
    assert 'hermes_llm_backend_error_rate{api="anthropic",model="claude-haiku-4-5"} 0.5' in metrics

    monkeypatch.setenv("HERMES_DATA_DIR", runtime.settings.data_dir)
    printed = CliRunner().invoke(cli, ["llm", "backends", "--json", "--calls", "2"])
    assert printed.exit_code == 0, printed.output
    registry = json.loads(printed.output)
    assert [h["api"] for h in registry["health"] if h["ok"]] == ["anthropic", "openai", "transcription"]
    assert registry["reasons"] == {"primary": 2, "fallback_error": 1}
    assert [(c["api"], c["reason"]) for c in registry["calls"]] == [("anthropic", "primary"),
                                                                    ("openai", "fallback_error")]


def test_a_provider_that_cannot_be_reached_is_probed_down(served):
    _url, runtime, _claude, _openai = served
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    down = dataclasses.replace(runtime.settings, llm_anthropic_url=closed, llm_openai_url="",
                               llm_transcribe_url="")
    with runtime.db.connection_context():
        assert llm_registry.probe(runtime.settings)["anthropic"] is True
        assert llm_registry.probe(down) == {"anthropic": False}
        [row] = LlmBackendHealth.select()
    assert (row.api, row.ok, row.status, row.detail) == ("anthropic", False, 0, "unreachable (ConnectError)")
    assert row.last_ok_at is not None  # when it was last healthy, for the operator


def test_a_route_reason_outside_the_vocabulary_is_refused_before_any_upstream_call(served):
    url, runtime, claude, _openai = served
    token = _token(runtime)
    answer = httpx.post(f"{url}{llm_gateway.ANTHROPIC_PATH}/v1/messages",
                        headers={"x-api-key": token, ROUTE_REASON_HEADER: "because I said so"},
                        json={"model": "claude-haiku-4-5", "max_tokens": 10,
                              "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "because" not in answer.text
    assert claude.requests == [] and _calls(runtime) == []
