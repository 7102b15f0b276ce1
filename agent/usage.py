"""Usage ledger: one record per LLM call (tenant, model, tokens, cost in cents, latency, and the
goal or job it worked for).

Kept in SQLite on the VM; the router reads today's spend from it to enforce the tenant's daily
budget, ``/usage`` sums it, and each turn's records travel to the control plane inside the
turn's ``final``/``error`` event (``usage.calls``).  Days and months are UTC calendar periods.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent import schema


def _add_columns(db, columns: tuple[tuple[str, str], ...]) -> None:
    """Add each absent ``(name, SQL type)`` column to ``llm_calls`` (nullable)."""
    present = schema.column_names(db, "llm_calls")
    for name, kind in columns:
        if name not in present:
            db.execute(f"ALTER TABLE llm_calls ADD COLUMN {name} {kind}")


# Schema steps in order (agent/schema.py: append, never edit a released step).
STEPS = (
    """
CREATE TABLE IF NOT EXISTS llm_calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_cents REAL NOT NULL,
    latency_ms INTEGER NOT NULL,
    purpose TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS llm_calls_tenant_at ON llm_calls (tenant, at);
""",
    # Spend by goal and by job (issue 23): the goal or job a call worked for, if any.
    lambda db: _add_columns(db, (("goal_id", "INTEGER"), ("job_id", "TEXT"))),
)


@dataclass(frozen=True)
class CallRecord:
    """One LLM call.

    Attributes:
        tenant: tenant id; backend, model: who answered.
        input_tokens, output_tokens: tokens billed; cost_cents: US cents; latency_ms: wall time.
        purpose: ``turn``, ``extract``, ``summary``...; at: Unix time in seconds.
        goal_id: the goal (``agent.goals``) the call worked for, else None.
        job_id: the job (Jobs API) the call worked for, else None.
    """

    tenant: str
    backend: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_cents: float
    latency_ms: int
    purpose: str = "turn"
    at: float = 0.0
    goal_id: int | None = None
    job_id: str | None = None

    def to_dict(self) -> dict:
        """Return the record as a JSON-ready dict (the shape of ``usage.calls[]``)."""
        return asdict(self)


def summarise_calls(calls: list[CallRecord]) -> dict | None:
    """Return the ``usage`` dict of a final event for ``calls``, or None when there were none.

    Shape: ``{"model", "input_tokens", "output_tokens", "cost_cents", "latency_ms", "calls"}``
    with totals at the top level and ``model`` the last call's model.
    """
    if not calls:
        return None
    return {
        "model": calls[-1].model,
        "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls),
        "cost_cents": round(sum(c.cost_cents for c in calls), 6),
        "latency_ms": sum(c.latency_ms for c in calls),
        "calls": [c.to_dict() for c in calls],
    }


def _period_start(now: float, month: bool) -> float:
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(day=1 if month else moment.day, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


class UsageLedger:
    """LLM call records in SQLite.

    Args:
        path: database file (created if missing).
        clock: wall clock in Unix seconds (injectable for tests).
    """

    def __init__(self, path: str | Path, clock=time.time):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        schema.apply(self._db, "usage", STEPS)
        self._lock = threading.Lock()
        self.clock = clock

    def record(self, record: CallRecord) -> CallRecord:
        """Store ``record`` (stamping ``at`` with the clock when 0); return it."""
        if not record.at:
            record = CallRecord(**{**asdict(record), "at": self.clock()})
        with self._lock:
            self._db.execute(
                "INSERT INTO llm_calls (tenant, backend, model, input_tokens, output_tokens, cost_cents,"
                " latency_ms, purpose, at, goal_id, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (record.tenant, record.backend, record.model, record.input_tokens, record.output_tokens,
                 record.cost_cents, record.latency_ms, record.purpose, record.at, record.goal_id,
                 record.job_id))
        return record

    def totals(self, tenant: str, *, month: bool = False) -> dict:
        """Return ``{"calls", "input_tokens", "output_tokens", "cost_cents"}`` for today (UTC) or
        this month."""
        since = _period_start(self.clock(), month)
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(input_tokens), 0), COALESCE(SUM(output_tokens), 0),"
                " COALESCE(SUM(cost_cents), 0) FROM llm_calls WHERE tenant = ? AND at >= ?",
                (tenant, since)).fetchone()
        return {"calls": row[0], "input_tokens": row[1], "output_tokens": row[2], "cost_cents": row[3]}

    def today_by(self, tenant: str, column: str) -> list[tuple[int | str, int, float]]:
        """Return today's (UTC) spend of ``tenant`` per goal or per job, dearest first.

        Args:
            tenant: tenant id.
            column: ``"goal_id"`` or ``"job_id"``.

        Returns:
            ``[(goal or job id, calls, cents)]``; calls for no goal or job are left out.

        Raises:
            ValueError: ``column`` is neither.
        """
        if column not in ("goal_id", "job_id"):
            raise ValueError(f"no spend by {column!r}")
        since = _period_start(self.clock(), False)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {column}, COUNT(*), SUM(cost_cents) FROM llm_calls WHERE tenant = ? AND at >= ?"
                f" AND {column} IS NOT NULL GROUP BY {column} ORDER BY SUM(cost_cents) DESC, {column}",
                (tenant, since)).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    def spent_today(self, tenant: str) -> float:
        """Return the cents ``tenant`` spent since 00:00 UTC today."""
        return self.totals(tenant)["cost_cents"]
