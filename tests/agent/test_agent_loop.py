"""The tool-use loop against the Messages API stand-in: tools that work, raise or hang."""

from __future__ import annotations

import threading
import time

from agent.history import History
from agent.tools.loader import load_builtin_tools
from agent.tools.registry import Tool, ToolRegistry
from agent.turn import TurnRunner
from standins.anthropic_api import text_reply, tool_reply


def _registry_with_faulty_tools() -> ToolRegistry:
    registry = ToolRegistry()
    builtin = load_builtin_tools()
    for name in builtin.names():
        registry.register(builtin.get(name))

    def explode(args, ctx):
        raise RuntimeError("disk on fire")

    def hang(args, ctx):
        time.sleep(30)

    registry.register(Tool("explode", "always fails", {"type": "object", "properties": {}}, explode))
    registry.register(Tool("hang", "never returns", {"type": "object", "properties": {}}, hang, timeout=0.3))
    return registry


def _tool_results(request_json) -> list[dict]:
    return [b for b in request_json["messages"][-1]["content"] if b.get("type") == "tool_result"]


def test_tool_errors_and_timeouts_go_back_to_the_model_and_the_turn_still_answers(
        make_runtime, standin, helpers):
    runtime = make_runtime(registry=_registry_with_faulty_tools())
    standin.script([
        tool_reply(("calculate", {"expression": "6 * 7"}), text="Let me work it out."),
        tool_reply(("explode", {}), ("hang", {})),
        text_reply("The answer is 42, although two helpers failed."),
    ])
    env = helpers.envelope("what is six times seven?")
    started = time.monotonic()
    reply = TurnRunner(runtime).handle(env)

    assert time.monotonic() - started < 10  # the hung tool did not hold the turn
    assert reply == "Let me work it out.\n\nThe answer is 42, although two helpers failed."
    second, third = standin.requests[1]["json"], standin.requests[2]["json"]
    [calc] = _tool_results(second)
    assert calc["content"] == "42" and calc["is_error"] is False
    boom, hung = _tool_results(third)
    assert boom["is_error"] is True and "disk on fire" in boom["content"]
    assert hung["is_error"] is True and "timed out" in hung["content"]
    events = helpers.events_for(runtime.bus, env.id)
    assert events[-1].kind == "final" and events[-1].text == reply
    assert events[-1].usage["input_tokens"] > 0 and len(events[-1].usage["calls"]) == 3
    deltas = [e.text for e in events if e.kind == "delta"]
    assert deltas and all(reply.startswith(d) for d in deltas)  # cumulative, consistent with final


def test_unknown_tool_is_an_error_result_not_a_crash(make_runtime, standin, helpers):
    runtime = make_runtime()
    standin.script([tool_reply(("teleport", {"to": "mars"})), text_reply("I can't teleport.")])
    assert TurnRunner(runtime).handle(helpers.envelope("beam me up")) == "I can't teleport."
    [result] = _tool_results(standin.requests[1]["json"])
    assert result["is_error"] and "unknown tool" in result["content"]


def test_step_limit_ends_the_tool_loop_with_an_answer(make_runtime, standin, helpers):
    runtime = make_runtime(max_steps=2)
    standin.script([tool_reply(("current_time", {}))] * 2 + [text_reply("Done looping.")])
    assert TurnRunner(runtime).handle(helpers.envelope("loop forever")) == "Done looping."
    assert len(standin.requests) == 3
    assert "tools" not in standin.requests[2]["json"]  # the last call may not ask for tools


def test_stop_command_cancels_a_running_turn(make_runtime, standin, helpers):
    runtime = make_runtime()
    standin.script([text_reply("This is a very long answer " * 50, chunk=4, chunk_delay=0.02)])
    env = helpers.envelope("tell me a long story")
    runner = TurnRunner(runtime, stop_poll=0.0)
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("reply", runner.handle(env)))
    runtime.inbox.admit(env.id, History.chat_key(env.channel, env.chat_id), env.to_json())
    runtime.inbox.start(env.id)
    worker.start()
    helpers.wait_for(lambda: any(e.kind == "delta" for e in helpers.events_for(runtime.bus, env.id)))
    stop = helpers.envelope("/stop")
    assert runner.handle(stop) == "Stopping the current reply."
    worker.join(10)
    assert not worker.is_alive()
    assert out["reply"].endswith("(stopped)")
    assert len(out["reply"]) < len("This is a very long answer " * 50)
