"""``/goal`` end to end with a real Huey consumer and the Messages API stand-in scripted: a goal
the judge calls done after several turns, one it never does (stopped at the turn cap, the judge
failing on the way), one the user interrupts, and one that outlives a restart of the agent."""

from __future__ import annotations

import json
import threading

from agent.goal_runner import parse_verdict
from agent.tasks import AgentTasks
from standins.anthropic_api import Reply, error_reply, last_user_text, text_reply


class Scripted:
    """Answers the stand-in: goal turns, judge calls and user messages, counted separately."""

    def __init__(self, verdicts, turn=lambda n: text_reply(f"Worked on step {n}.")):
        self.verdicts = list(verdicts)
        self.turn = turn
        self.turns = 0
        self.judged = 0

    def __call__(self, request: dict) -> Reply:
        text = last_user_text(request)
        if text.startswith("You judge whether"):
            self.judged += 1
            return self.verdicts.pop(0) if len(self.verdicts) > 1 else self.verdicts[0]
        if text.startswith("[Goal #"):
            self.turns += 1
            return self.turn(self.turns)
        return text_reply("Sunny, 21 degrees.")


def _finals(helpers, bus, chat: str = "chat-1") -> list[str]:
    return [e.text for e in helpers.all_events(bus) if e.kind == "final" and e.chat_id == chat]


def _ended(helpers, runtime, state: str, **wait):
    """Goal #1 once it is in ``state`` and its end report is on the bus (published just after)."""
    end = {"done": "Goal #1 is done after", "stopped": "Goal #1 stopped after"}[state]

    def ended():
        goal = runtime.goals.get(1)
        if goal is None or goal.state != state:
            return None
        return goal if any(f.startswith(end) for f in _finals(helpers, runtime.bus)) else None

    return helpers.wait_for(ended, **wait)


def test_a_goal_reaches_done_in_several_turns(make_runtime, standin, helpers, consumer_of):
    runtime = make_runtime(goal_yield_delay=0.1)
    tasks = AgentTasks(runtime)
    consumer_of(tasks, workers=2)
    standin.responder = Scripted([text_reply("CONTINUE: draft the second verse"),
                                  text_reply("CONTINUE: polish it"), text_reply("DONE: the poem is finished")])

    tasks.submit(helpers.envelope("/goal write a three-verse poem about Hermes"))

    goal = _ended(helpers, runtime, "done")
    assert goal.turns == 3 and goal.cost_cents > 0
    finals = _finals(helpers, runtime.bus)
    assert finals[0].startswith("Goal #1 set: write a three-verse poem")
    assert "Worked on step 1." in finals and "Worked on step 3." in finals
    assert any(f.startswith("Goal #1: turn 2 of 20 done") and f.endswith("continuing: polish it.")
               for f in finals)
    assert finals[-1].startswith("Goal #1 is done after 3 turns") and "the poem is finished" in finals[-1]
    assert "[done]" in tasks.runner.handle(helpers.envelope("/goal status"))


def test_a_goal_the_judge_never_calls_done_stops_at_the_turn_cap(make_runtime, standin, helpers, consumer_of):
    runtime = make_runtime(goal_yield_delay=0.1)
    tasks = AgentTasks(runtime)
    consumer_of(tasks, workers=1)
    # The judge keeps saying continue, answers nonsense once and fails outright once (HTTP 500 on
    # every retry): both fail open, so only the cap of 20 turns ends the goal.
    verdicts = [text_reply("CONTINUE: more")] * 4 + [text_reply("maybe?")] + [error_reply(500)] * 3
    standin.responder = Scripted([*verdicts, text_reply("CONTINUE: more")])

    tasks.submit(helpers.envelope("/goal find the perfect espresso grind"))

    goal = _ended(helpers, runtime, "stopped", timeout=120)
    assert goal.turns == runtime.config.goal_max_turns == 20
    assert _finals(helpers, runtime.bus)[-1].startswith(
        "Goal #1 stopped after 20 turns") and "limit of 20 turns without being done" in _finals(
        helpers, runtime.bus)[-1]


def test_a_user_message_preempts_a_goal_which_then_continues(make_runtime, standin, helpers, consumer_of):
    runtime = make_runtime(goal_yield_delay=0.1)
    tasks = AgentTasks(runtime)
    consumer_of(tasks, workers=2)
    # The goal's first turn would stream for hours if nothing stopped it, and the stand-in
    # starts streaming it only once the user's question has been answered: the whole of the
    # user's turn then falls between two of the goal turn's stop polls.  Later turns are quick.
    requested, answered = threading.Event(), threading.Event()
    endless = text_reply("Researching flights " * 100_000, chunk=4, chunk_delay=0.05)

    def goal_turn(n: int) -> Reply:
        if n > 1:
            return text_reply("Booked the 9:40 train.")
        requested.set()
        answered.wait()
        return endless

    scripted = Scripted([text_reply("DONE: booked")], turn=goal_turn)
    standin.responder = scripted
    tasks.submit(helpers.envelope("/goal plan my trip to Lyon"))
    question = helpers.envelope("what's the weather tomorrow?")
    try:
        helpers.wait_for(requested.is_set)
        tasks.submit(question)
        helpers.wait_for(lambda: runtime.inbox.state(question.id) == "done")
    finally:
        answered.set()

    goal = _ended(helpers, runtime, "done", timeout=120)
    finals = _finals(helpers, runtime.bus)
    answer = finals.index("Sunny, 21 degrees.")
    stopped = [i for i, f in enumerate(finals) if f.endswith("(stopped)")]
    assert len(stopped) == 1 and answer < stopped[0] < finals.index("Booked the 9:40 train.")
    assert goal.turns == 1 and goal.runs == 2  # the interrupted turn did not count against the cap
    assert scripted.turns == 2
    # The turn after the interruption sees what the user asked meanwhile.
    last_goal_turn = [r["json"] for r in standin.requests if last_user_text(r["json"]).startswith("[Goal #")][-1]
    assert "what's the weather tomorrow?" in json.dumps(last_goal_turn)


def test_goals_survive_an_agent_restart(make_runtime, standin, helpers, consumer_of):
    first = make_runtime(goal_yield_delay=0.1)
    before = AgentTasks(first)
    assert "Goal #1 set" in before.runner.handle(helpers.envelope("/goal tidy my notes"))
    # The worker dies mid-step: the step is off the queue and its claim is still held.
    before.huey.flush()
    assert first.goals.claim(1)
    first.close()

    runtime = make_runtime(goal_yield_delay=0.1)
    tasks = AgentTasks(runtime)
    assert runtime.goals.get(1).state == "active"
    standin.responder = Scripted([text_reply("CONTINUE: next folder"), text_reply("DONE: all tidy")])
    tasks.recover()
    consumer_of(tasks, workers=2)

    goal = _ended(helpers, runtime, "done")
    assert goal.turns == 2
    assert _finals(helpers, runtime.bus)[-1].startswith("Goal #1 is done after 2 turns")


def test_goal_commands_pause_resume_and_cancel(make_runtime, helpers):
    runtime = make_runtime()
    tasks = AgentTasks(runtime)  # no consumer: the steps stay queued
    ask = tasks.runner.handle
    assert ask(helpers.envelope("/goal")) == "No goal here yet. Start one with /goal OBJECTIVE."
    ask(helpers.envelope("/goal learn Italian"))
    assert "still active" in ask(helpers.envelope("/goal learn Spanish"))
    assert ask(helpers.envelope("/goal pause")).startswith("Paused goal #1")
    assert "[paused]" in ask(helpers.envelope("/goal status"))
    assert ask(helpers.envelope("/goal resume")) == "Resumed goal #1."
    assert 1 in tasks.queued_goal_ids()
    assert ask(helpers.envelope("/goal cancel")).startswith("Cancelled goal #1")
    assert tasks.goal_runner.step(1) is None  # a queued step of a cancelled goal does nothing
    assert ask(helpers.envelope("/goal learn Spanish")).startswith("Goal #2 set")


def test_judge_verdicts_are_parsed_leniently_and_anything_else_is_unclear():
    assert parse_verdict("DONE: shipped") == parse_verdict("**Done**: shipped")
    assert parse_verdict("DONE: shipped").done and parse_verdict("CONTINUE: next").note == "next"
    assert parse_verdict("I think we're nearly there") is None and parse_verdict("") is None
