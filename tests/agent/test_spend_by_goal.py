"""Spend by goal (issue 23): a goal's calls — its turns and its judge — are recorded under the
goal, and ``/usage`` shows them under it, apart from the user's own conversation."""

from __future__ import annotations

import re

from agent.tasks import AgentTasks
from standins.anthropic_api import Reply, last_user_text, text_reply


def _responder(request: dict) -> Reply:
    text = last_user_text(request)
    if text.startswith("You judge whether"):
        return text_reply("DONE: listed" if "turn 2" in text else "CONTINUE: finish the list")
    if text.startswith("[Goal #"):
        return text_reply("Listed three more books.")
    return text_reply("Hello there.")


def test_a_goals_spend_shows_under_it_in_usage(make_runtime, standin, helpers, consumer_of):
    runtime = make_runtime(goal_yield_delay=0.1)
    tasks = AgentTasks(runtime)
    standin.responder = _responder
    assert tasks.runner.handle(helpers.envelope("hi")) == "Hello there."
    consumer_of(tasks, workers=1)

    tasks.submit(helpers.envelope("/goal list ten books about the sea"))
    goal = helpers.wait_for(lambda: (g := runtime.goals.get(1)) is not None and g.state == "done" and g)

    usage = tasks.runner.handle(helpers.envelope("/usage"))
    line = next(ln for ln in usage.splitlines() if ln.startswith("- Goal #1 "))
    assert line.startswith("- Goal #1 list ten books about the sea: 4 calls, $")  # 2 turns + 2 judges
    assert float(re.search(r"\$([0-9.]+)$", line).group(1)) == round(goal.cost_cents / 100, 4)
    today = float(re.search(r"^Today: .*\$([0-9.]+)$", usage, re.M).group(1))
    assert today > goal.cost_cents / 100  # the greeting was spent too, but not under the goal
    assert "Today by job" not in usage
