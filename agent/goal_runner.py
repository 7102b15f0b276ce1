"""One step of a goal: a turn the agent takes on its own, then a judge's verdict (issue 23).

The behaviour follows Hermes Agent's ``/goal``: after each turn a cheap model call (the judge,
through the tenant's router, so it is budgeted and accounted like any call) reads the goal
and the turn's reply and answers ``DONE`` or ``CONTINUE``.  A judge that fails or answers
something else "fails open" to continue, so the turn cap is the real backstop.  A step:

1. does nothing unless the goal is ``active`` and no other step of it runs (``GoalStore.claim``);
2. yields when the user has a message waiting or running in the goal's chat (commands aside):
   the step is retried ``goal_yield_delay`` seconds later, after the user's turn;
3. stops the goal when the tenant's daily budget is spent;
4. runs a turn (``TurnRunner.handle``) on a synthetic envelope in the goal's chat, so the
   reply, its deltas and its usage reach the user like any other reply; the turn stops early
   when the user writes meanwhile — a message queued or running, or one already answered
   since the turn began (then step 2 applies, and the turn is not counted) — or the
   goal is paused or cancelled, and may cost at most what is left of the goal's budget;
5. asks the judge, then ends the goal (``done``; ``stopped`` at ``max_turns`` or
   ``budget_cents``, whichever first) or reports progress, with a ``final`` event each time.

Costs are US cents: the turn's and the judge's calls, as the router priced them.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass

from agent import commands
from agent.goals import GOAL_SENDER, Goal, GoalStore
from agent.history import History
from agent.llm.base import LLMError
from wire.protocol import Envelope, Event

log = logging.getLogger(__name__)

GOAL_NAMESPACE = uuid.UUID("0b6f4a8e-3f0c-4d51-a7f7-2a55f1f0c7b3")

JUDGE_PROMPT = """You judge whether an assistant has fully achieved a user's goal.

Goal: {objective}

The assistant's latest turn (turn {turn} of at most {max_turns}):
<<<
{reply}
>>>

Answer with exactly one line: "DONE: <why>" when the goal is fully achieved, otherwise
"CONTINUE: <the next step>"."""

TURN_PROMPT = ("[Goal #{id}, turn {turn} of at most {max_turns}] Keep working on this goal on your own: "
               "{objective}\nTake the next concrete step now and say what you did. When the goal is "
               "achieved, say so plainly and give the result.")


@dataclass(frozen=True)
class Verdict:
    """The judge's answer: ``done`` and its one-line ``note`` (why, or the next step)."""

    done: bool
    note: str


def parse_verdict(text: str) -> Verdict | None:
    """Return the verdict in a judge's reply, or None when it says neither DONE nor CONTINUE."""
    line = text.strip().splitlines()[0].strip() if text.strip() else ""
    word, _, rest = line.partition(":")
    word = word.strip().strip("*").upper()
    if word in ("DONE", "CONTINUE"):
        return Verdict(word == "DONE", rest.strip()[:300])
    return None


class GoalRunner:
    """Runs goal steps for one tenant.

    Args:
        runtime: the ``agent.runtime.AgentRuntime`` (its ``goals`` store, router, inbox, bus).
        runner: the ``agent.turn.TurnRunner`` that answers turns.
    """

    def __init__(self, runtime, runner):
        self.runtime = runtime
        self.runner = runner

    @property
    def goals(self) -> GoalStore:
        """The tenant's goal store."""
        return self.runtime.goals

    def step(self, goal_id: int) -> float | None:
        """Run one step of goal ``goal_id``; return seconds until the next step, or None when
        no further step is due (the goal ended, is paused, or another step holds it)."""
        if not self.goals.claim(goal_id):
            return None
        try:
            delay = self._step(goal_id)
        finally:
            self.goals.release(goal_id)
        goal = self.goals.get(goal_id)
        # A /goal resume during the step found it claimed and left the goal to this chain.
        if delay is None and goal is not None and goal.state == "active" and goal.turns < goal.max_turns:
            return 0.0
        return delay

    def _step(self, goal_id: int) -> float | None:
        goal = self.goals.get(goal_id)
        if goal is None or goal.state != "active":
            return None
        if self._user_waiting(goal):
            log.info("goal %d yields to the user's message", goal.id)
            return self.runtime.config.goal_yield_delay
        left = self.runtime.router.budget_left_cents()
        if left is not None and left <= 0:
            self._end(goal, "stopped", "today's AI budget is used up")
            return None
        preempted = {"yes": False}
        pursued: Goal = goal
        chat_key = History.chat_key(goal.channel, goal.chat_id)
        # The turn is polled (``TurnRunner.stop_poll``), so a user's turn may start and finish
        # between two polls: a new exchange in the chat's history counts as writing meanwhile
        # too, not only a message still queued or running.
        seen = self._last_exchange(chat_key)

        def interrupted() -> bool:
            current = self.goals.get(pursued.id)
            if current is None or current.state != "active":
                return True
            preempted["yes"] = self._user_waiting(pursued) or self._last_exchange(chat_key) != seen
            return preempted["yes"]

        run = self.goals.start_run(goal.id)
        turn = goal.turns + 1
        envelope = Envelope(id=str(uuid.uuid5(GOAL_NAMESPACE, f"{goal.key}:{run}")),
                            tenant=self.runtime.tenant, channel=goal.channel, chat_id=goal.chat_id,
                            sender_id=GOAL_SENDER, text=TURN_PROMPT.format(id=goal.id, turn=turn,
                                                                           max_turns=goal.max_turns,
                                                                           objective=goal.objective))
        budget = goal.budget_cents - goal.cost_cents
        turn_cap = self.runtime.config.turn_budget_cents
        router = self.runtime.router
        with router.collect() as calls, router.attributed(goal_id=goal.id):
            reply = self.runner.handle(envelope, should_stop=interrupted,
                                       budget_cents=min(budget, turn_cap) if turn_cap > 0 else budget)
        cost = sum(c.cost_cents for c in calls)
        current = self.goals.get(goal.id)
        if preempted["yes"] or current is None or current.state != "active":
            self.goals.add_use(goal.id, cost)
            return self.runtime.config.goal_yield_delay if preempted["yes"] else None
        with router.collect() as judged, router.attributed(goal_id=goal.id):
            verdict = self._judge(goal, turn, reply)
        goal = self.goals.add_use(goal.id, cost + sum(c.cost_cents for c in judged), turns=1,
                                  note=verdict.note)
        if verdict.done:
            self._end(goal, "done", verdict.note or "the goal is achieved")
            return None
        if goal.turns >= goal.max_turns:
            self._end(goal, "stopped", f"it reached its limit of {goal.max_turns} turns without being done")
            return None
        if goal.cost_cents >= goal.budget_cents:
            self._end(goal, "stopped", f"it used its budget of ${goal.budget_cents / 100:.2f}")
            return None
        self._report(goal, run, f"Goal #{goal.id}: turn {goal.turns} of {goal.max_turns} done, "
                                f"${goal.cost_cents / 100:.4f} of ${goal.budget_cents / 100:.2f} spent; "
                                f"continuing{': ' + verdict.note if verdict.note else ''}.")
        return 0.0

    def _judge(self, goal: Goal, turn: int, reply: str) -> Verdict:
        """Ask the judge; fail open (continue) when it errs or answers unclearly."""
        prompt = JUDGE_PROMPT.format(objective=goal.objective, turn=turn, max_turns=goal.max_turns,
                                     reply=reply[-6000:] or "(no reply)")
        try:
            answer = self.runtime.router.complete(prompt, purpose="goal_judge", max_tokens=200)
        except LLMError as exc:
            log.warning("goal %d judge failed, continuing: %s", goal.id, exc)
            return Verdict(False, "")
        verdict = parse_verdict(answer)
        if verdict is None:
            log.warning("goal %d judge answered unclearly, continuing: %.80r", goal.id, answer)
            return Verdict(False, "")
        return verdict

    def _last_exchange(self, chat_key: str) -> int:
        """Return the id of the chat's newest history turn (0 when none); the goal's own turn
        records its exchange only when it ends, so a change while it runs is someone else's."""
        rows = self.runtime.history.recent_rows(chat_key, 1)
        return rows[-1][0] if rows else 0

    def _user_waiting(self, goal: Goal) -> bool:
        """True when the goal's chat has a message (not a command) queued or being answered."""
        key = History.chat_key(goal.channel, goal.chat_id)
        for payload in self.runtime.inbox.open_payloads(key):
            try:
                text = json.loads(payload).get("text") or ""
            except (ValueError, AttributeError):
                continue
            if not commands.is_command(text):
                return True
        return False

    def _end(self, goal: Goal, state: str, why: str) -> None:
        ended = self.goals.set_state(goal.id, state, why, only_from=("active",))
        if ended is None:
            return
        verb = {"done": "is done", "stopped": "stopped"}[state]
        log.info("goal %d %s after %d turns, %.4f cents: %s", goal.id, state, ended.turns,
                 ended.cost_cents, why)
        self._report(ended, ended.runs, f"Goal #{ended.id} {verb} after {ended.turns} turns and "
                                        f"${ended.cost_cents / 100:.4f}: {why}.", final=True)

    def _report(self, goal: Goal, run: int, text: str, final: bool = False) -> None:
        """Publish a progress (or end) report to the goal's chat as a ``final`` event."""
        label = "end" if final else f"report:{run}"
        message_id = str(uuid.uuid5(GOAL_NAMESPACE, f"{goal.key}:{label}"))
        self.runtime.publish(Event(message_id=message_id, seq=0, kind="final", text=text,
                                   tenant=self.runtime.tenant, channel=goal.channel, chat_id=goal.chat_id))
