"""``SqliteBus``: the embedded implementation of the bus contract on one SQLite file.

Several processes (the control plane and every local agent) share the file; WAL mode lets
readers and one writer work at once, and every claim runs in a ``BEGIN IMMEDIATE``
transaction so two consumers of a group never take the same entry.  SQLite has no
notification mechanism, so a blocking ``read`` polls every ``poll_interval`` seconds.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from wire.bus import Bus, Delivery
from wire.errors import BusUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS bus_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS bus_entries_stream ON bus_entries (stream, id);
CREATE TABLE IF NOT EXISTS bus_idempotency (
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    PRIMARY KEY (stream, key)
);
CREATE TABLE IF NOT EXISTS bus_groups (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    last_id INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (stream, grp)
);
CREATE TABLE IF NOT EXISTS bus_pending (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    entry_id INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, entry_id)
);
"""


class SqliteBus(Bus):
    """Bus on a SQLite file at ``path``.

    Args:
        path: database file; created with its schema if missing.
        visibility_timeout: seconds an entry may stay pending before it is redelivered.
        poll_interval: seconds between polls while a ``read`` blocks.
    """

    def __init__(self, path: str | Path, visibility_timeout: float = 30.0, poll_interval: float = 0.02):
        self.path = str(path)
        self.visibility_timeout = visibility_timeout
        self.poll_interval = poll_interval
        self._local = threading.local()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise BusUnavailable(f"cannot open bus database {self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    @contextmanager
    def _immediate(self, what: str):
        """Run the block in a ``BEGIN IMMEDIATE`` transaction (the write lock taken up front, so
        two consumers never claim the same entry); map SQLite errors to ``BusUnavailable``."""
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BusUnavailable(f"{what} failed: {exc}") from exc

    def append(self, stream: str, payload: str, idempotency_key: str | None = None) -> str:
        """See ``Bus.append``; the entry is durable when this returns."""
        with self._immediate(f"append to {stream}") as conn:
            entry_id = self._append_once(conn, stream, payload, idempotency_key)
        return str(entry_id)

    def append_many(self, stream, payloads, idempotency_keys=None):
        """See ``Bus.append_many``; the whole batch is one transaction (all or nothing)."""
        keys = idempotency_keys if idempotency_keys is not None else [None] * len(payloads)
        with self._immediate(f"append to {stream}") as conn:
            ids = [self._append_once(conn, stream, p, k) for p, k in zip(payloads, keys, strict=True)]
        return [str(entry_id) for entry_id in ids]

    @staticmethod
    def _append_once(conn, stream, payload, idempotency_key) -> int:
        if idempotency_key is not None:
            row = conn.execute(
                "SELECT entry_id FROM bus_idempotency WHERE stream = ? AND key = ?",
                (stream, idempotency_key),
            ).fetchone()
            if row:
                return row[0]
        entry_id = conn.execute(
            "INSERT INTO bus_entries (stream, payload, created_at) VALUES (?, ?, ?)",
            (stream, payload, time.time()),
        ).lastrowid
        if idempotency_key is not None:
            conn.execute(
                "INSERT INTO bus_idempotency (stream, key, entry_id) VALUES (?, ?, ?)",
                (stream, idempotency_key, entry_id),
            )
        return entry_id

    def read(self, streams, group, consumer, count=10, block=0.0):
        """See ``Bus.read``."""
        deadline = time.monotonic() + block
        while True:
            deliveries = self._claim(list(streams), group, consumer, count)
            if deliveries or time.monotonic() >= deadline:
                return deliveries
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def _claim(self, streams: list[str], group: str, consumer: str, count: int) -> list[Delivery]:
        now = time.time()
        out: list[Delivery] = []
        with self._immediate(f"read from {streams}") as conn:
            for stream in streams:
                conn.execute(
                    "INSERT OR IGNORE INTO bus_groups (stream, grp, last_id) VALUES (?, ?, 0)",
                    (stream, group),
                )
                out += self._claim_expired(conn, stream, group, consumer, count - len(out), now)
                out += self._claim_new(conn, stream, group, consumer, count - len(out), now)
        return out

    def _claim_expired(self, conn, stream, group, consumer, limit, now) -> list[Delivery]:
        if limit <= 0:
            return []
        rows = conn.execute(
            "SELECT p.entry_id, e.payload, p.attempts FROM bus_pending p "
            "JOIN bus_entries e ON e.id = p.entry_id "
            "WHERE p.stream = ? AND p.grp = ? AND p.delivered_at <= ? ORDER BY p.entry_id LIMIT ?",
            (stream, group, now - self.visibility_timeout, limit),
        ).fetchall()
        for entry_id, _, _ in rows:
            conn.execute(
                "UPDATE bus_pending SET consumer = ?, delivered_at = ?, attempts = attempts + 1 "
                "WHERE stream = ? AND grp = ? AND entry_id = ?",
                (consumer, now, stream, group, entry_id),
            )
        return [Delivery(stream, str(eid), payload, attempts + 1) for eid, payload, attempts in rows]

    def _claim_new(self, conn, stream, group, consumer, limit, now) -> list[Delivery]:
        if limit <= 0:
            return []
        (last_id,) = conn.execute(
            "SELECT last_id FROM bus_groups WHERE stream = ? AND grp = ?", (stream, group)
        ).fetchone()
        rows = conn.execute(
            "SELECT id, payload FROM bus_entries WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
            (stream, last_id, limit),
        ).fetchall()
        if not rows:
            return []
        conn.executemany(
            "INSERT INTO bus_pending (stream, grp, entry_id, consumer, delivered_at, attempts) "
            "VALUES (?, ?, ?, ?, ?, 1)",
            [(stream, group, eid, consumer, now) for eid, _ in rows],
        )
        conn.execute(
            "UPDATE bus_groups SET last_id = ? WHERE stream = ? AND grp = ?",
            (rows[-1][0], stream, group),
        )
        return [Delivery(stream, str(eid), payload, 1) for eid, payload in rows]

    def ack(self, stream, group, entry_id):
        """See ``Bus.ack``; acknowledging twice is harmless."""
        try:
            self._conn().execute(
                "DELETE FROM bus_pending WHERE stream = ? AND grp = ? AND entry_id = ?",
                (stream, group, int(entry_id)),
            )
        except sqlite3.Error as exc:
            raise BusUnavailable(f"ack on {stream} failed: {exc}") from exc

    def ack_many(self, stream, group, entry_ids):
        """See ``Bus.ack_many``; one transaction for the whole batch."""
        conn = self._conn()
        try:
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(
                    "DELETE FROM bus_pending WHERE stream = ? AND grp = ? AND entry_id = ?",
                    [(stream, group, int(entry_id)) for entry_id in entry_ids],
                )
        except sqlite3.Error as exc:
            raise BusUnavailable(f"ack on {stream} failed: {exc}") from exc

    def dead_letter(self, delivery, group, reason):
        """See ``Bus.dead_letter``."""
        record = {"entry_id": delivery.entry_id, "group": group, "reason": reason,
                  "payload": delivery.payload, "attempts": delivery.attempts}
        self.append(f"{delivery.stream}:dead", json.dumps(record))
        self.ack(delivery.stream, group, delivery.entry_id)

    def delete_stream(self, stream):
        """See ``Bus.delete_stream``: one transaction over the four tables."""
        streams = (stream, f"{stream}:dead")
        with self._immediate(f"delete {stream}") as conn:
            for table in ("bus_entries", "bus_idempotency", "bus_groups", "bus_pending"):
                conn.execute(f"DELETE FROM {table} WHERE stream IN (?, ?)", streams)

    def dead_letter_streams(self):
        """See ``Bus.dead_letter_streams``."""
        rows = self._conn().execute(
            "SELECT DISTINCT stream FROM bus_entries WHERE stream LIKE '%:dead' ORDER BY stream")
        return [stream for (stream,) in rows.fetchall()]

    def entries(self, stream, count=100):
        """See ``Bus.entries``."""
        rows = self._conn().execute(
            "SELECT id, payload FROM bus_entries WHERE stream = ? ORDER BY id LIMIT ?",
            (stream, count))
        return [(str(entry_id), payload) for entry_id, payload in rows.fetchall()]

    def remove(self, stream, entry_id):
        """See ``Bus.remove``."""
        if not str(entry_id).isdigit():
            return False
        with self._immediate(f"remove from {stream}") as conn:
            return conn.execute("DELETE FROM bus_entries WHERE stream = ? AND id = ?",
                                (stream, int(entry_id))).rowcount > 0

    def pending_count(self, stream, group):
        """See ``Bus.pending_count``."""
        (n,) = self._conn().execute(
            "SELECT COUNT(*) FROM bus_pending WHERE stream = ? AND grp = ?", (stream, group)
        ).fetchone()
        return n

    def length(self, stream):
        """See ``Bus.length``."""
        (n,) = self._conn().execute(
            "SELECT COUNT(*) FROM bus_entries WHERE stream = ?", (stream,)
        ).fetchone()
        return n

    def count_since(self, stream, since):
        """See ``Bus.count_since``."""
        (n,) = self._conn().execute(
            "SELECT COUNT(*) FROM bus_entries WHERE stream = ? AND created_at >= ?", (stream, since)
        ).fetchone()
        return n

    def ping(self):
        """See ``Bus.ping``."""
        try:
            self._conn().execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise BusUnavailable(f"bus database {self.path} unavailable: {exc}") from exc

    def close(self):
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
