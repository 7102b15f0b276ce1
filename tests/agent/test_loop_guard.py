"""The loop guard with the real tool loop and the Messages API stand-in: a model that repeats
one tool call forever, a tool that keeps failing the same way, and a turn that costs too much
all end with an explanation instead of running on (OpenClaw #67399: 754 identical retries)."""

from __future__ import annotations

from agent.loop_guard import REPEAT_LIMIT
from agent.tools.registry import Tool, ToolError, ToolRegistry
from agent.turn import TurnRunner
from standins.anthropic_api import tool_reply

OBJECT = {"type": "object", "properties": {"q": {"type": "string"}}}


def _counting_registry(calls: list) -> ToolRegistry:
    registry = ToolRegistry()

    def lookup(args, ctx):
        calls.append(args)
        return "still pending"

    def flaky(args, ctx):
        calls.append(args)
        raise ToolError("upstream service unavailable")

    registry.register(Tool("lookup", "look something up", OBJECT, lookup))
    registry.register(Tool("flaky", "always fails the same way", OBJECT, flaky))
    return registry


def test_a_model_repeating_one_tool_call_is_stopped_and_told_to_the_user(make_runtime, standin, helpers):
    calls: list = []
    runtime = make_runtime(registry=_counting_registry(calls))
    standin.responder = lambda request: tool_reply(("lookup", {"q": "order 7"}), text="Checking.")
    env = helpers.envelope("is my order there yet?")

    reply = TurnRunner(runtime).handle(env)

    assert len(calls) == REPEAT_LIMIT  # the next identical call was not run
    assert len(standin.requests) == REPEAT_LIMIT + 1  # and no model call followed the trip
    assert "same input" in reply and reply.endswith("Tell me how you'd like to proceed.")
    final = helpers.events_for(runtime.bus, env.id)[-1]
    assert final.kind == "final" and final.text == reply


def test_identical_calls_asked_for_in_one_round_are_capped_too(make_runtime, standin, helpers):
    calls: list = []
    runtime = make_runtime(registry=_counting_registry(calls))
    standin.script([tool_reply(*[("lookup", {"q": "same"})] * 50)])

    reply = TurnRunner(runtime).handle(helpers.envelope("look it up"))

    assert len(calls) == REPEAT_LIMIT and len(standin.requests) == 1
    assert "going round in circles" in reply


def test_the_same_failure_repeated_ends_the_turn_even_with_new_arguments(make_runtime, standin, helpers):
    calls: list = []
    runtime = make_runtime(registry=_counting_registry(calls))
    standin.script([tool_reply(("flaky", {"q": f"try {n}"})) for n in range(10)])

    reply = TurnRunner(runtime).handle(helpers.envelope("fetch it"))

    assert len(calls) == REPEAT_LIMIT and len(standin.requests) == REPEAT_LIMIT
    assert f"flaky failed {REPEAT_LIMIT} times" in reply and "upstream service unavailable" in reply


def test_a_turn_stops_at_its_spending_cap(make_runtime, standin, helpers):
    calls: list = []
    # 100k input tokens of Claude Haiku 5.5 cost 1 cent: the cap of 1.5 is crossed by the 2nd call.
    runtime = make_runtime(registry=_counting_registry(calls), turn_budget_cents=1.5, daily_budget_cents=0)
    standin.script([tool_reply(("lookup", {"q": f"page {n}"}), input_tokens=100_000, output_tokens=0)
                    for n in range(8)])
    env = helpers.envelope("read every page")

    reply = TurnRunner(runtime).handle(env)

    assert len(standin.requests) == 2 and len(calls) == 1  # the 2nd call's tools did not run
    assert "spending cap of $0.01" in reply
    usage = helpers.events_for(runtime.bus, env.id)[-1].usage
    assert usage["cost_cents"] == 2.0
