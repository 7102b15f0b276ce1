"""The agent's conversation history, processed-envelope ledger, history summaries and per-tenant
preferences (``/model``), in SQLite on the VM.

``processed`` makes the agent idempotent on envelope id: a redelivered envelope whose reply
was already produced is answered from the ledger, never by a second LLM call.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from agent import schema

# Schema steps in order (agent/schema.py: append, never edit a released step).
STEPS = (
    """
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_key TEXT NOT NULL,
    role TEXT NOT NULL,
    text TEXT NOT NULL,
    envelope_id TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_chat ON turns (chat_key, id);
CREATE TABLE IF NOT EXISTS summaries (
    chat_key TEXT PRIMARY KEY,
    upto_id INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prefs (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processed (
    envelope_id TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    created_at REAL NOT NULL
);
""",
)


class History:
    """Conversation turns per chat and the processed-envelope ledger.

    Args:
        path: SQLite file (created if missing).
    """

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        schema.apply(self._db, "history", STEPS)
        self._lock = threading.Lock()

    @staticmethod
    def chat_key(channel: str, chat_id: str) -> str:
        """Return the key under which a chat's turns are stored."""
        return f"{channel}:{chat_id}"

    def recent(self, chat_key: str, limit: int) -> list[dict]:
        """Return the last ``limit`` turns of a chat, oldest first, as ``{"role", "content"}``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT role, text FROM turns WHERE chat_key = ? ORDER BY id DESC LIMIT ?",
                (chat_key, limit),
            ).fetchall()
        return [{"role": role, "content": text} for role, text in reversed(rows)]

    def recent_rows(self, chat_key: str, limit: int) -> list[tuple[int, str, str]]:
        """Return the last ``limit`` turns of a chat, oldest first, as ``(id, role, text)``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, role, text FROM turns WHERE chat_key = ? ORDER BY id DESC LIMIT ?",
                (chat_key, limit),
            ).fetchall()
        return list(reversed(rows))

    def summary(self, chat_key: str) -> tuple[int, str] | None:
        """Return ``(upto_id, text)``: the summary of a chat's turns up to ``upto_id``, or None."""
        with self._lock:
            row = self._db.execute("SELECT upto_id, text FROM summaries WHERE chat_key = ?",
                                   (chat_key,)).fetchone()
        return (row[0], row[1]) if row else None

    def save_summary(self, chat_key: str, upto_id: int, text: str) -> None:
        """Store the summary of a chat's turns up to turn ``upto_id`` (replacing the previous)."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO summaries (chat_key, upto_id, text) VALUES (?, ?, ?)",
                             (chat_key, upto_id, text))

    def pref(self, key: str) -> str | None:
        """Return preference ``key`` (e.g. ``model``) or None."""
        with self._lock:
            row = self._db.execute("SELECT value FROM prefs WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_pref(self, key: str, value: str | None) -> None:
        """Set preference ``key``; None deletes it."""
        with self._lock:
            if value is None:
                self._db.execute("DELETE FROM prefs WHERE key = ?", (key,))
            else:
                self._db.execute("INSERT OR REPLACE INTO prefs (key, value) VALUES (?, ?)", (key, value))

    def mark_processed(self, envelope_id: str, reply: str) -> None:
        """Record ``reply`` for ``envelope_id`` without adding turns (commands stay out of context)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO processed (envelope_id, reply, created_at) VALUES (?, ?, ?)",
                (envelope_id, reply, time.time()),
            )

    def processed_reply(self, envelope_id: str) -> str | None:
        """Return the reply already produced for ``envelope_id``, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT reply FROM processed WHERE envelope_id = ?", (envelope_id,)
            ).fetchone()
        return row[0] if row else None

    def record_exchange(self, chat_key: str, envelope_id: str, user_text: str, reply: str) -> None:
        """Store the user's message and the reply, and mark ``envelope_id`` processed (atomically)."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT INTO turns (chat_key, role, text, envelope_id, created_at) VALUES (?, ?, ?, ?, ?)",
                    [(chat_key, "user", user_text, envelope_id, now),
                     (chat_key, "assistant", reply, envelope_id, now)],
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO processed (envelope_id, reply, created_at) VALUES (?, ?, ?)",
                    (envelope_id, reply, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def clear(self, chat_key: str) -> None:
        """Forget a chat's turns and summary (a new conversation); the processed ledger stays."""
        with self._lock:
            self._db.execute("DELETE FROM turns WHERE chat_key = ?", (chat_key,))
            self._db.execute("DELETE FROM summaries WHERE chat_key = ?", (chat_key,))
