"""Cron jobs of one tenant, in SQLite: add/list/pause/resume/remove and claiming due runs.

A job remembers the chat it was created in; each run becomes a synthetic ``Envelope`` (same
channel and chat id, sender ``cron``, the job's prompt as text, a fresh id derived from the job
and the scheduled instant) that goes through the normal turn path, so the reply reaches the
originating chat like any other.  Fire times come from ``agent.cron_schedule.next_run``
(DST-correct).  ``claim_due`` is atomic, so a periodic tick and start-up recovery never run a
slot twice; a slot missed by more than the grace window (the VM was down) is skipped and the
skip is noted on the job.
"""

from __future__ import annotations

import builtins
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from agent import schema
from agent.cron_schedule import ScheduleError, next_run, validate
from wire.protocol import Envelope, new_id

log = logging.getLogger(__name__)


# Schema steps in order (agent/schema.py: append, never edit a released step).
STEPS = (
    """
CREATE TABLE IF NOT EXISTS cron_jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    channel TEXT NOT NULL,
    chat_id TEXT NOT NULL,
    expr TEXT NOT NULL,
    tz TEXT NOT NULL,
    prompt TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    next_run_at REAL NOT NULL,
    last_run_at REAL,
    note TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cron_runs (
    job_id INTEGER NOT NULL,
    scheduled_at REAL NOT NULL,
    status TEXT NOT NULL,
    envelope_id TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    PRIMARY KEY (job_id, scheduled_at)
);
""",
)


@dataclass(frozen=True)
class CronJob:
    """One scheduled prompt (times are Unix seconds, UTC)."""

    id: int
    tenant: str
    channel: str
    chat_id: str
    expr: str
    tz: str
    prompt: str
    paused: bool
    next_run_at: float
    last_run_at: float | None
    note: str

    def describe(self) -> str:
        """One line for ``/cron list``: id, state, schedule, zone, next run (local), prompt."""
        local = datetime.fromtimestamp(self.next_run_at, UTC).astimezone(validate(self.expr, self.tz))
        state = "paused" if self.paused else f"next {local:%Y-%m-%d %H:%M %Z}"
        note = f" — {self.note}" if self.note else ""
        return f"#{self.id} [{state}] \"{self.expr}\" tz={self.tz}: {self.prompt}{note}"


@dataclass(frozen=True)
class CronRun:
    """A claimed slot: run ``job`` for the instant ``scheduled_at`` as ``envelope``."""

    job: CronJob
    scheduled_at: float
    envelope: Envelope


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class CronStore:
    """The tenant's cron jobs.

    Args:
        path: SQLite file (created if missing).
        tenant: tenant id.
        clock: wall clock in Unix seconds (injectable: tests freeze it).
    """

    def __init__(self, path: str | Path, tenant: str, clock=time.time):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        schema.apply(self._db, "cron", STEPS)
        self._lock = threading.Lock()
        self.tenant = tenant
        self.clock = clock

    def add(self, channel: str, chat_id: str, expr: str, tz: str, prompt: str) -> CronJob:
        """Create a job firing ``prompt`` on ``expr`` in zone ``tz``; return it.

        Raises:
            ScheduleError: invalid expression or zone, or an empty prompt.
        """
        if not prompt.strip():
            raise ScheduleError("a cron job needs a prompt")
        now = self.clock()
        first = next_run(expr, tz, _utc(now)).timestamp()
        with self._lock:
            job_id = self._db.execute(
                "INSERT INTO cron_jobs (tenant, channel, chat_id, expr, tz, prompt, next_run_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.tenant, channel, chat_id, expr, tz, prompt.strip(), first, now)).lastrowid
        job = self.get(job_id) if job_id is not None else None
        assert job is not None  # just inserted
        return job

    def get(self, job_id: int) -> CronJob | None:
        """Return job ``job_id`` or None."""
        with self._lock:
            row = self._db.execute("SELECT * FROM cron_jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def list(self) -> list[CronJob]:
        """Return every job, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM cron_jobs ORDER BY id").fetchall()
        return [self._job(r) for r in rows]

    def pause(self, job_id: int) -> CronJob | None:
        """Stop a job from firing (until ``resume``); return it or None if unknown."""
        return self._update(job_id, "UPDATE cron_jobs SET paused = 1 WHERE id = ?", (job_id,))

    def resume(self, job_id: int) -> CronJob | None:
        """Let a paused job fire again from now on (missed slots are not replayed)."""
        job = self.get(job_id)
        if job is None:
            return None
        upcoming = next_run(job.expr, job.tz, _utc(self.clock())).timestamp()
        return self._update(job_id, "UPDATE cron_jobs SET paused = 0, next_run_at = ? WHERE id = ?",
                            (upcoming, job_id))

    def remove(self, job_id: int) -> bool:
        """Delete a job; return whether it existed."""
        with self._lock:
            return self._db.execute("DELETE FROM cron_jobs WHERE id = ?", (job_id,)).rowcount > 0

    def claim_due(self, grace: float) -> builtins.list[CronRun]:
        """Claim every slot due now; return the runs to execute.

        A job whose ``next_run_at`` has passed by at most ``grace`` seconds yields one run; one
        late by more is skipped and noted.  Either way its next slot is computed after *now*,
        so several missed slots collapse into at most one run.
        """
        now = self.clock()
        runs: list[CronRun] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    "SELECT * FROM cron_jobs WHERE paused = 0 AND next_run_at <= ? ORDER BY next_run_at",
                    (now,)).fetchall()
                for row in rows:
                    run = self._claim(self._job(row), now, grace)
                    if run is not None:
                        runs.append(run)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return runs

    def _claim(self, job: CronJob, now: float, grace: float) -> CronRun | None:
        slot = job.next_run_at
        upcoming = next_run(job.expr, job.tz, _utc(now)).timestamp()
        # Random, not derived from (tenant, job, slot): the control plane refuses a reply to an
        # id another tenant already used, so a computable id could be claimed first (issue #19).
        # The cron_runs row keeps it, and its (job_id, scheduled_at) key stops a second claim.
        envelope_id = new_id()
        late = now - slot
        status = "run" if late <= grace else "skipped"
        inserted = self._db.execute(
            "INSERT OR IGNORE INTO cron_runs (job_id, scheduled_at, status, envelope_id, claimed_at)"
            " VALUES (?, ?, ?, ?, ?)", (job.id, slot, status, envelope_id, now)).rowcount
        if status == "run":
            self._db.execute("UPDATE cron_jobs SET next_run_at = ?, last_run_at = ?, note = '' WHERE id = ?",
                             (upcoming, slot, job.id))
        else:
            note = (f"skipped the run of {_utc(slot):%Y-%m-%d %H:%M} UTC: the agent was offline "
                    f"{int(late // 60)} min past it (grace {int(grace // 60)} min)")
            log.warning("cron job %s: %s", job.id, note)
            self._db.execute("UPDATE cron_jobs SET next_run_at = ?, note = ? WHERE id = ?",
                             (upcoming, note, job.id))
        if status != "run" or not inserted:
            return None
        envelope = Envelope(id=envelope_id, tenant=self.tenant, channel=job.channel, chat_id=job.chat_id,
                            sender_id="cron", text=job.prompt, received_at=now)
        return CronRun(job=job, scheduled_at=slot, envelope=envelope)

    def runs(self, job_id: int) -> builtins.list[tuple[float, str]]:
        """Return ``[(scheduled_at, status)]`` of a job's claimed slots, oldest first."""
        with self._lock:
            return self._db.execute("SELECT scheduled_at, status FROM cron_runs WHERE job_id = ?"
                                    " ORDER BY scheduled_at", (job_id,)).fetchall()

    def _update(self, job_id: int, sql: str, params: tuple) -> CronJob | None:
        with self._lock:
            changed = self._db.execute(sql, params).rowcount
        return self.get(job_id) if changed else None

    @staticmethod
    def _job(row) -> CronJob:
        return CronJob(id=row[0], tenant=row[1], channel=row[2], chat_id=row[3], expr=row[4], tz=row[5],
                       prompt=row[6], paused=bool(row[7]), next_run_at=row[8], last_run_at=row[9],
                       note=row[10])


__all__ = ["CronJob", "CronRun", "CronStore", "ScheduleError"]
