"""The loop guard: a per-turn breaker for runaway tool loops and runaway spend (issue 23).

Peers lost money to models that call one tool over and over: OpenClaw #67399 retried one
identical tool call 754 times (~$70), #86357 ran a heartbeat loop of 810 calls.  The step limit
of ``agent.loop`` bounds rounds, not calls (one round may ask for many), and says nothing about
spend, so the tool loop consults a ``LoopGuard`` before every tool call and after every model
call:

* ``REPEAT_LIMIT`` identical calls (same tool, same arguments, compared as canonical JSON) in
  one turn: the next identical call is not run and the turn ends with ``Trip.reason``.
* ``REPEAT_LIMIT`` identical failures (same tool, same error text, whatever the arguments):
  the turn ends after the last one.
* ``budget_cents`` spent by the turn's model calls: the turn ends instead of running the tools
  the last call asked for.

The explanation is ours, not the model's: after a trip no further model call is made, so a
broken tool or a confused model cannot cost more.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

REPEAT_LIMIT = 3
"""Identical calls (or identical failures) allowed per turn.  Two covers the honest cases —
a retry after a transient error, a re-read after a write — and a third identical call with
nothing changed in between is a loop: a deterministic tool will answer it the same way.  Kept
small because every repeat is a paid model round trip (#67399 shows what a large one costs)."""


@dataclass(frozen=True)
class Trip:
    """Why the guard ended a turn: ``kind`` (``repeat``, ``failure`` or ``budget``) and the
    sentence shown to the user (``reason``)."""

    kind: str
    reason: str


class LoopGuard:
    """Counts one turn's tool calls, failures and spend.

    Args:
        budget_cents: the turn's spend cap in US cents (``HERMES_TURN_BUDGET_CENTS``, or what is
            left of a goal's budget); ``0`` or less: no cap.
        repeat_limit: identical calls or failures allowed (default ``REPEAT_LIMIT``).
    """

    def __init__(self, budget_cents: float = 0.0, repeat_limit: int = REPEAT_LIMIT):
        self.budget_cents = budget_cents
        self.repeat_limit = repeat_limit
        self.spent_cents = 0.0
        self._calls: Counter[str] = Counter()
        self._failures: Counter[tuple[str, str]] = Counter()

    def before_call(self, name: str, args: dict) -> Trip | None:
        """Count a call the model asked for; return a ``Trip`` when it must not run."""
        key = f"{name}:{json.dumps(args, sort_keys=True, default=str)}"
        if self._calls[key] >= self.repeat_limit:
            return Trip("repeat", f"I stopped: I was about to call {name} with the same input for the "
                                  f"{_nth(self._calls[key] + 1)} time in this reply, which means I "
                                  "was going round in circles. Tell me how you'd like to proceed.")
        self._calls[key] += 1
        return None

    def after_failure(self, name: str, error: str) -> Trip | None:
        """Count a failed call; return a ``Trip`` once the same failure reached the limit."""
        key = (name, error.strip()[:500])
        self._failures[key] += 1
        if self._failures[key] >= self.repeat_limit:
            return Trip("failure", f"I stopped: {name} failed {self._failures[key]} times in this reply "
                                   f"with the same error ({error.strip()[:200]}), so trying again would "
                                   "not help. Tell me how you'd like to proceed.")
        return None

    def after_model_call(self, cost_cents: float) -> Trip | None:
        """Add one model call's cost; return a ``Trip`` once the turn's cap is reached."""
        self.spent_cents += cost_cents
        if self.budget_cents > 0 and self.spent_cents >= self.budget_cents:
            return Trip("budget", f"I stopped: this reply reached its spending cap of "
                                  f"${self.budget_cents / 100:.2f} before I finished. Ask me to "
                                  "continue if you want me to carry on.")
        return None


def _nth(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")
