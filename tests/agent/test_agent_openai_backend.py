"""The openai_compat backend (OpenRouter / Ollama / vLLM / llama.cpp server) against a stand-in
speaking the Chat Completions streaming format, inside the tool loop and the router."""

from __future__ import annotations

import pytest

from agent.llm.anthropic_backend import AnthropicBackend
from agent.llm.openai_backend import OpenAICompatBackend
from agent.turn import TurnRunner
from standins.anthropic_api import error_reply, text_reply, tool_reply
from standins.openai_api import OpenAIStandin


@pytest.fixture
def openai_api():
    with OpenAIStandin() as api:
        yield api


def test_tool_loop_over_an_openai_compatible_server(make_runtime, openai_api, helpers):
    backend = OpenAICompatBackend(base_url=openai_api.base_url, model="qwen2.5:7b")
    runtime = make_runtime(backends=[backend])
    openai_api.script([tool_reply(("calculate", {"expression": "2 ** 10"})), text_reply("It is 1024.")])
    env = helpers.envelope("what is two to the tenth?")
    assert TurnRunner(runtime).handle(env) == "It is 1024."

    first, second = (r["json"] for r in openai_api.requests)
    assert first["tools"][0]["type"] == "function" and first["messages"][0]["role"] == "system"
    assistant, tool = second["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["name"] == "calculate"
    assert tool == {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "1024"}
    final = helpers.events_for(runtime.bus, env.id)[-1]
    assert final.usage["calls"][0]["backend"] == "openai_compat" and final.usage["cost_cents"] == 0


def test_anthropic_overloaded_fails_over_to_an_openai_compatible_backend(make_runtime, standin, openai_api,
                                                                         helpers):
    backends = [AnthropicBackend("k", base_url=standin.base_url),
                OpenAICompatBackend(base_url=openai_api.base_url, model="llama3.1")]
    runtime = make_runtime(backends=backends, llm_retries=2)
    standin.script([error_reply(529), error_reply(529)])
    openai_api.script(["Answered by the fallback."])
    assert TurnRunner(runtime).handle(helpers.envelope("hello")) == "Answered by the fallback."
    assert len(standin.requests) == 2 and len(openai_api.requests) == 1


def test_a_server_without_tool_support_just_answers_text(make_runtime, openai_api, helpers):
    backend = OpenAICompatBackend(base_url=openai_api.base_url, model="tiny", supports_tools=False)
    runtime = make_runtime(backends=[backend])
    openai_api.script(["Plain answer."])
    assert TurnRunner(runtime).handle(helpers.envelope("what time is it?")) == "Plain answer."
    assert "tools" not in openai_api.requests[0]["json"]
