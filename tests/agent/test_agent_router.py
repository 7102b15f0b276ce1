"""The LLM router: failover on 529, retries on 429, circuit breaker, daily budget, policies."""

from __future__ import annotations

import pytest

from agent.llm.anthropic_backend import AnthropicBackend
from agent.llm.base import BudgetExhausted, LLMError, complete_text
from agent.llm.router import Router
from agent.turn import TurnRunner
from agent.usage import CallRecord, UsageLedger
from standins.anthropic_api import AnthropicStandin, error_reply, text_reply


@pytest.fixture
def second():
    with AnthropicStandin() as api:
        yield api


def _router(tmp_path, *backends, **kwargs) -> Router:
    kwargs.setdefault("sleep", lambda seconds: None)
    return Router(list(backends), UsageLedger(tmp_path / "usage.db"), "t1", **kwargs)


def test_failover_when_the_primary_answers_529_overloaded(tmp_path, standin, second):
    standin.script([error_reply(529)] * 3)
    second.script(["answer from the fallback"])
    router = _router(tmp_path, AnthropicBackend("k", base_url=standin.base_url),
                     AnthropicBackend("k", base_url=second.base_url, model="claude-haiku-4-5-20251001"),
                     retries=3)
    with router.collect() as calls:
        assert complete_text(router, "hello") == "answer from the fallback"
    assert len(standin.requests) == 3  # retried with backoff before failing over
    assert [c.model for c in calls] == ["claude-haiku-4-5-20251001"] and len(second.requests) == 1
    assert calls[0].cost_cents > 0


def test_a_429_is_retried_on_the_same_backend(tmp_path, standin):
    standin.script([error_reply(429), "fine now"])
    router = _router(tmp_path, AnthropicBackend("k", base_url=standin.base_url))
    assert complete_text(router, "hi") == "fine now"
    assert len(standin.requests) == 2


def test_a_bad_request_is_not_retried_and_fails(tmp_path, standin):
    standin.script([error_reply(400, "messages: bad")])
    router = _router(tmp_path, AnthropicBackend("k", base_url=standin.base_url))
    with pytest.raises(LLMError) as info:
        complete_text(router, "hi")
    assert not info.value.retryable and len(standin.requests) == 1


def test_open_circuit_skips_the_failing_backend(tmp_path, standin, second):
    standin.script([error_reply(500)] * 2)
    second.responder = lambda body: text_reply("backup")
    router = _router(tmp_path, AnthropicBackend("k", base_url=standin.base_url),
                     AnthropicBackend("k", base_url=second.base_url), retries=1, breaker_fail_max=2)
    for _ in range(4):
        assert complete_text(router, "hi") == "backup"
    assert len(standin.requests) == 2  # after two failures the primary is not called at all
    assert router.breakers[id(router.backends[0])].current_state == "open"


def test_budget_exhaustion_mid_conversation_refuses_paid_calls_with_a_clear_message(
        make_runtime, standin, helpers):
    runtime = make_runtime(daily_budget_cents=1.0)
    standin.script([text_reply("first answer", input_tokens=1000, output_tokens=100)])
    first = TurnRunner(runtime).handle(helpers.envelope("hi"))
    assert first == "first answer"
    # 1000 in + 100 out of Haiku 5.5 = 0.015 cents; someone spent the rest of the day's budget.
    runtime.usage.record(CallRecord("t1", "anthropic", "claude-haiku-5-5", 49000, 10000, 0.99, 10))
    env = helpers.envelope("and now?")
    reply = TurnRunner(runtime).handle(env)
    assert "daily AI budget ($0.01) is used up" in reply
    assert len(standin.requests) == 1  # no paid call was made
    assert helpers.events_for(runtime.bus, env.id)[-1].kind == "final"


def test_budget_spent_falls_back_to_the_free_local_model(make_runtime, standin, helpers):
    from agent.llm.local_backend import LocalBackend

    backends = [AnthropicBackend("k", base_url=standin.base_url), LocalBackend()]
    runtime = make_runtime(backends=backends, daily_budget_cents=0.5, max_tokens=24)
    runtime.usage.record(CallRecord("t1", "anthropic", "claude-haiku-5-5", 5000, 0, 0.5, 10))
    env = helpers.envelope("Say hello.")
    reply = TurnRunner(runtime).handle(env)
    assert reply.startswith("(Today's AI budget of $0.01 is used up, so the free local model")
    assert len(reply) > 120  # the local model wrote something after the notice
    assert standin.requests == []
    final = helpers.events_for(runtime.bus, env.id)[-1]
    assert final.usage["cost_cents"] == 0 and final.usage["calls"][0]["backend"] == "local"


def test_cost_first_puts_the_free_backend_first(tmp_path, standin, second):
    paid = AnthropicBackend("k", base_url=standin.base_url)
    free = AnthropicBackend("k", base_url=second.base_url, model="house-model")
    assert [b for b, _ in _router(tmp_path, paid, free, policy="cost_first").ordered()] == [free, paid]
    assert [b for b, _ in _router(tmp_path, paid, free).ordered()] == [paid, free]


def test_no_free_backend_and_no_budget_raises_budget_exhausted(tmp_path, standin):
    router = _router(tmp_path, AnthropicBackend("k", base_url=standin.base_url), daily_budget_cents=0.01)
    router.usage.record(CallRecord("t1", "anthropic", "claude-haiku-5-5", 0, 0, 0.02, 1))
    with pytest.raises(BudgetExhausted):
        complete_text(router, "hi")
