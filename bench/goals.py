"""Goal cost and turns (issue 23): three scripted goals run step by step on a real agent
runtime against the Messages API stand-in (token counts estimated from the real requests,
4 characters per token; priced with ``wire.pricing`` for the default model), and one
draft-before-questions exchange.

    python bench/goals.py

* ``quick``: the judge says done after the first turn;
* ``three_turns``: done after the third;
* ``never_done``: the judge always says continue, so the turn cap (20) stops it.
* ``draft``: a vague request (draft + questions) and its answer (revised draft).

Per goal: ``turns``, ``calls`` (turns + judge calls), ``input_tokens``, ``output_tokens``,
``cost_cents`` (the goal's own account, which ``/usage`` shows under it), ``state`` and
``seconds`` (wall time on this host, stand-in latency zero).  Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.config import AgentConfig
from agent.runtime import AgentRuntime
from agent.tasks import AgentTasks
from standins.anthropic_api import AnthropicStandin, Reply, last_user_text, text_reply
from wire.protocol import Envelope, new_id

TURN_TEXT = ("Step done: I compared three options, wrote down the trade-offs and picked the "
             "cheapest one that meets the deadline. ") * 4
SCENARIOS = {"quick": 1, "three_turns": 3, "never_done": None}


def _responder(done_after: int | None):
    def answer(request: dict) -> Reply:
        text = last_user_text(request)
        if text.startswith("You judge whether"):
            turn = int(text.split("(turn ")[1].split(" ")[0])
            return text_reply("DONE: achieved" if done_after is not None and turn >= done_after
                              else "CONTINUE: keep going")
        if text.startswith("[Goal #"):
            return text_reply(TURN_TEXT)
        if "## Draft first, then ask" in str(request.get("system")):
            return text_reply("# Plan\n" + TURN_TEXT + "\n\nQuestions:\n1. Budget?\n2. Dates?\n3. Who?")
        return text_reply("# Plan, revised\n" + TURN_TEXT)
    return answer


def _runtime(data: Path, base_url: str) -> AgentRuntime:
    config = AgentConfig(tenant="bench", data_dir=str(data), bus_url=f"sqlite:///{data / 'bus.db'}",
                         llm="anthropic", anthropic_api_key="bench", anthropic_base_url=base_url,
                         memory_extraction=False, delta_interval=0.0, llm_backoff=0.0)
    return AgentRuntime(config, start_mcp=False)


def _envelope(text: str, chat: str) -> Envelope:
    return Envelope(id=new_id(), tenant="bench", channel="telegram", chat_id=chat, sender_id="u", text=text)


def run_goal(name: str, done_after: int | None, base_url: str, standin: AnthropicStandin) -> dict:
    """Run one scripted goal to its end; return its figures."""
    standin.responder = _responder(done_after)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = _runtime(Path(tmp), base_url)
        tasks = AgentTasks(runtime)
        started = time.perf_counter()
        tasks.runner.handle(_envelope(f"/goal {name}: choose a supplier", "1"))
        tasks.huey.flush()  # this bench drives the steps itself, one after the other
        while tasks.goal_runner.step(1) is not None:
            pass
        seconds = time.perf_counter() - started
        goal = runtime.goals.get(1)
        [(_, calls, cents)] = runtime.usage.today_by("bench", "goal_id")
        totals = runtime.usage.totals("bench")
        runtime.close()
    return {"turns": goal.turns, "calls": calls, "input_tokens": totals["input_tokens"],
            "output_tokens": totals["output_tokens"], "cost_cents": round(cents, 4),
            "state": goal.state, "seconds": round(seconds, 2)}


def run_draft(base_url: str, standin: AnthropicStandin) -> dict:
    """A vague request, then its answer; return the replies' shape and cost."""
    standin.responder = _responder(None)
    with tempfile.TemporaryDirectory() as tmp:
        runtime = _runtime(Path(tmp), base_url)
        tasks = AgentTasks(runtime)
        first = tasks.runner.handle(_envelope("plan a team event", "2"))
        revised = tasks.runner.handle(_envelope("June, 12 people, EUR 5000", "2"))
        totals = runtime.usage.totals("bench")
        runtime.close()
    return {"first_reply_questions": first.count("?"), "first_reply_has_draft": first.startswith("# Plan"),
            "revised_has_questions": "?" in revised, "calls": totals["calls"],
            "cost_cents": round(totals["cost_cents"], 4)}


def main() -> None:
    """Run every scenario and print the JSON line."""
    with AnthropicStandin() as standin:
        figures = {name: run_goal(name, done_after, standin.base_url, standin)
                   for name, done_after in SCENARIOS.items()}
        figures["draft"] = run_draft(standin.base_url, standin)
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    main()
