"""The durable per-envelope inbox ledger and the cross-process ``/stop`` flags, in SQLite.

Huey removes a task from its queue when a worker takes it, so a worker killed mid-turn would
lose the envelope.  The ledger keeps each envelope's state — ``queued`` → ``running`` →
``done`` (or ``dead`` after the last attempt) — and start-up re-enqueues every envelope that is
``queued``/``running`` but not in Huey's queue.  Combined with the turn runner's processed
ledger and the ``{message_id}:final`` idempotency key, the user sees exactly one reply.

``/stop`` is handled by the listener process while a worker process runs the turn, so the
request crosses processes here: ``request_stop(chat_key)`` and ``stop_requested(chat_key,
since)`` (Unix seconds).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from enum import StrEnum
from pathlib import Path

from agent import schema

# Schema steps in order (agent/schema.py: append, never edit a released step).
STEPS = (
    """
CREATE TABLE IF NOT EXISTS inbox (
    envelope_id TEXT PRIMARY KEY,
    chat_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox (state);
CREATE TABLE IF NOT EXISTS stop_requests (
    chat_key TEXT PRIMARY KEY,
    requested_at REAL NOT NULL
);
""",
)



class InboxState(StrEnum):
    """An envelope's state in the ledger (stored as its string value)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    """Its last attempt failed (the user was told)."""


OPEN_STATES = (InboxState.QUEUED, InboxState.RUNNING)
_OPEN = "state IN (?, ?)"  # bound to OPEN_STATES


class InboxLedger:
    """Envelope states and stop flags.

    Args:
        path: SQLite file shared by the listener and worker processes (created if missing).
    """

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        schema.apply(self._db, "inbox", STEPS)
        self._lock = threading.Lock()

    def admit(self, envelope_id: str, chat_key: str, payload: str) -> str:
        """Record a new envelope as ``queued``; return its state (the existing one if known)."""
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO inbox (envelope_id, chat_key, payload, state, updated_at)"
                " VALUES (?, ?, ?, ?, ?)", (envelope_id, chat_key, payload, InboxState.QUEUED, time.time()))
            return self._db.execute("SELECT state FROM inbox WHERE envelope_id = ?",
                                    (envelope_id,)).fetchone()[0]

    def start(self, envelope_id: str) -> int:
        """Mark an envelope ``running``; return its attempt number (1 on the first run)."""
        with self._lock:
            self._db.execute("UPDATE inbox SET state = ?, attempts = attempts + 1, updated_at = ?"
                             " WHERE envelope_id = ?", (InboxState.RUNNING, time.time(), envelope_id))
            row = self._db.execute("SELECT attempts FROM inbox WHERE envelope_id = ?", (envelope_id,)).fetchone()
        return row[0] if row else 1

    def finish(self, envelope_id: str, state: InboxState = InboxState.DONE, error: str = "") -> None:
        """Mark an envelope ``done`` (or ``dead``/``queued`` for a retry) with an optional error."""
        with self._lock:
            self._db.execute("UPDATE inbox SET state = ?, error = ?, updated_at = ? WHERE envelope_id = ?",
                             (state, error[:2000], time.time(), envelope_id))

    def state(self, envelope_id: str) -> str | None:
        """Return an envelope's state, or None when unknown."""
        with self._lock:
            row = self._db.execute("SELECT state FROM inbox WHERE envelope_id = ?", (envelope_id,)).fetchone()
        return row[0] if row else None

    def unfinished(self) -> list[tuple[str, str]]:
        """Return ``[(envelope_id, payload)]`` still ``queued`` or ``running``, oldest first."""
        with self._lock:
            return self._db.execute(
                f"SELECT envelope_id, payload FROM inbox WHERE {_OPEN} ORDER BY updated_at",
                OPEN_STATES).fetchall()

    def running_in(self, chat_key: str) -> bool:
        """Return True when a turn of ``chat_key`` is running."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM inbox WHERE chat_key = ? AND state = ?",
                                    (chat_key, InboxState.RUNNING)).fetchone() is not None

    def open_payloads(self, chat_key: str) -> list[str]:
        """Return the payloads of ``chat_key``'s envelopes still ``queued`` or ``running``
        (a goal yields to them, ``agent.goal_runner``)."""
        with self._lock:
            return [r[0] for r in self._db.execute(
                f"SELECT payload FROM inbox WHERE chat_key = ? AND {_OPEN}", (chat_key, *OPEN_STATES))]

    def request_stop(self, chat_key: str, at: float | None = None) -> None:
        """Ask the running turn of ``chat_key`` to stop."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO stop_requests (chat_key, requested_at) VALUES (?, ?)",
                             (chat_key, time.time() if at is None else at))

    def stop_requested(self, chat_key: str, since: float) -> bool:
        """Return True when a stop for ``chat_key`` was requested after ``since`` (Unix seconds)."""
        with self._lock:
            row = self._db.execute("SELECT requested_at FROM stop_requests WHERE chat_key = ?",
                                   (chat_key,)).fetchone()
        return row is not None and row[0] >= since
