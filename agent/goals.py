"""Goals of one tenant, in SQLite (``<data_dir>/goals.db``): what ``/goal`` started and how far
each has got.

A goal belongs to the chat it was set in; that chat has at most one open goal (``active`` or
``paused``) at a time.  States: ``active`` (the agent works on it, ``agent.goal_runner``),
``paused`` (``/goal pause``), and the ends ``done`` (the judge said so), ``stopped`` (turn cap,
goal budget or daily budget reached), ``cancelled`` (``/goal cancel``), ``failed`` (a bug
ended it).  ``runs`` counts every turn started, preempted ones too, and names each turn's
envelope so a retried step never answers twice; ``turns`` counts the finished ones that the
cap applies to.  ``claimed`` marks a step in progress so one goal never runs two steps at once;
a worker killed mid-step leaves it set and start-up recovery (``release_all``) clears it.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent import schema

GOAL_SENDER = "goal"
"""``Envelope.sender_id`` of a goal's own turns (``agent.goal_runner``)."""
OPEN_STATES = ("active", "paused")
END_STATES = ("done", "stopped", "cancelled", "failed")

# Schema steps in order (agent/schema.py: append, never edit a released step).
STEPS = (
    """
CREATE TABLE IF NOT EXISTS goals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    channel TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    objective TEXT NOT NULL,
    state TEXT NOT NULL,
    max_turns INTEGER NOT NULL,
    budget_cents REAL NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    cost_cents REAL NOT NULL DEFAULT 0,
    note TEXT NOT NULL DEFAULT '',
    claimed INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS goals_chat ON goals (channel, chat_id, state);
""",
)


class GoalError(Exception):
    """A goal command cannot be carried out (the message says why, for the user)."""


@dataclass(frozen=True)
class Goal:
    """One goal (costs in US cents, times in Unix seconds).

    Attributes:
        id: number shown to the user; key: random id naming its turns' envelopes.
        channel, chat_id: where it was set and where its turns and reports go.
        objective: what the user asked for; state: see the module docstring.
        max_turns, budget_cents: its caps; turns, runs, cost_cents: use so far.
        note: the judge's last word, or why the goal ended.
    """

    id: int
    key: str
    channel: str
    chat_id: str
    objective: str
    state: str
    max_turns: int
    budget_cents: float
    turns: int
    runs: int
    cost_cents: float
    note: str

    def describe(self) -> str:
        """One line for ``/goal status``."""
        note = f" — {self.note}" if self.note else ""
        return (f"Goal #{self.id} [{self.state}] turn {self.turns} of {self.max_turns}, "
                f"${self.cost_cents / 100:.4f} of ${self.budget_cents / 100:.2f}: {self.objective}{note}")


_COLUMNS = "id, key, channel, chat_id, objective, state, max_turns, budget_cents, turns, runs, cost_cents, note"


class GoalStore:
    """The tenant's goals.

    Args:
        path: SQLite file (created if missing).
        clock: wall clock in Unix seconds.
    """

    def __init__(self, path: str | Path, clock=time.time):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        schema.apply(self._db, "goals", STEPS)
        self._lock = threading.Lock()
        self.clock = clock

    def create(self, channel: str, chat_id: str, objective: str, max_turns: int, budget_cents: float) -> Goal:
        """Start an ``active`` goal in the chat; return it.

        Raises:
            GoalError: the objective is empty, or the chat already has an open goal.
        """
        if not objective.strip():
            raise GoalError("Usage: /goal OBJECTIVE")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                open_goal = self._open(channel, chat_id)
                if open_goal is not None:
                    raise GoalError(f"Goal #{open_goal.id} is still {open_goal.state} here; "
                                    "/goal cancel it first.")
                now = self.clock()
                cursor = self._db.execute(
                    "INSERT INTO goals (key, channel, chat_id, objective, state, max_turns, budget_cents,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, 'active', ?, ?, ?, ?)",
                    (uuid.uuid4().hex, channel, chat_id, objective.strip(), max_turns, budget_cents, now, now))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        goal = self.get(int(cursor.lastrowid or 0))
        assert goal is not None
        return goal

    def get(self, goal_id: int) -> Goal | None:
        """Return goal ``goal_id``, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM goals WHERE id = ?", (goal_id,)).fetchone()
        return Goal(*row) if row else None

    def open_in(self, channel: str, chat_id: str) -> Goal | None:
        """Return the chat's open (active or paused) goal, or None."""
        with self._lock:
            return self._open(channel, chat_id)

    def latest_in(self, channel: str, chat_id: str) -> Goal | None:
        """Return the chat's most recent goal, open or ended, or None."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM goals WHERE channel = ? AND chat_id = ?"
                                   " ORDER BY id DESC LIMIT 1", (channel, chat_id)).fetchone()
        return Goal(*row) if row else None

    def active_ids(self) -> list[int]:
        """Return the ids of every ``active`` goal, oldest first."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM goals WHERE state = 'active' ORDER BY id")]

    def list(self) -> list[Goal]:
        """Return every goal, oldest first."""
        with self._lock:
            return [Goal(*r) for r in self._db.execute(f"SELECT {_COLUMNS} FROM goals ORDER BY id")]

    def set_state(self, goal_id: int, state: str, note: str | None = None,
                  only_from: tuple[str, ...] = OPEN_STATES) -> Goal | None:
        """Move the goal to ``state`` (with ``note``) if it is in one of ``only_from``; return
        it afterwards, or None when it was not in those states."""
        with self._lock:
            marks = ",".join("?" * len(only_from))
            changed = self._db.execute(
                f"UPDATE goals SET state = ?, note = COALESCE(?, note), updated_at = ?"
                f" WHERE id = ? AND state IN ({marks})",
                (state, note, self.clock(), goal_id, *only_from)).rowcount
        return self.get(goal_id) if changed else None

    def claim(self, goal_id: int) -> bool:
        """Mark a step of the goal in progress; False when another step holds it."""
        with self._lock:
            return self._db.execute("UPDATE goals SET claimed = 1 WHERE id = ? AND claimed = 0",
                                    (goal_id,)).rowcount == 1

    def release(self, goal_id: int) -> None:
        """End the goal's step in progress."""
        with self._lock:
            self._db.execute("UPDATE goals SET claimed = 0 WHERE id = ?", (goal_id,))

    def release_all(self) -> None:
        """Clear every claim (at worker start-up: no step is running yet)."""
        with self._lock:
            self._db.execute("UPDATE goals SET claimed = 0 WHERE claimed = 1")

    def start_run(self, goal_id: int) -> int:
        """Count a turn started; return its run number (1 for the first)."""
        with self._lock:
            self._db.execute("UPDATE goals SET runs = runs + 1, updated_at = ? WHERE id = ?",
                             (self.clock(), goal_id))
            return self._db.execute("SELECT runs FROM goals WHERE id = ?", (goal_id,)).fetchone()[0]

    def add_use(self, goal_id: int, cost_cents: float, turns: int = 0, note: str | None = None) -> Goal:
        """Add spend (and finished turns, and the judge's note); return the goal afterwards."""
        with self._lock:
            self._db.execute("UPDATE goals SET cost_cents = cost_cents + ?, turns = turns + ?,"
                             " note = COALESCE(?, note), updated_at = ? WHERE id = ?",
                             (cost_cents, turns, note, self.clock(), goal_id))
        goal = self.get(goal_id)
        assert goal is not None
        return goal

    def _open(self, channel: str, chat_id: str) -> Goal | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM goals WHERE channel = ? AND chat_id = ?"
                               " AND state IN ('active', 'paused') ORDER BY id DESC LIMIT 1",
                               (channel, chat_id)).fetchone()
        return Goal(*row) if row else None
