"""Huey tasks on the VM (SqliteHuey at ``<data_dir>/huey.db``): turns, cron ticks, recovery.

* ``handle_message(payload)``: one envelope → one turn.  Retried by Huey with exponential
  backoff (``task_retry_delay`` seconds, doubling); the last of ``task_attempts`` failures
  dead-letters the envelope: the user gets an apology (an ``error`` event, which the control
  plane also records as an operator attention item), the envelope is copied to
  ``hermes:messages:{tenant}:dead`` and the inbox ledger marks it ``dead``.
* Jobs (``job`` envelopes of the Jobs API, issue 23) run through ``handle_message`` too, with
  the job's priority as Huey task priority (higher first; chat messages and cron runs get
  ``MESSAGE_PRIORITY``, above any job's, so a user never waits behind a batch of jobs), their
  model calls capped at the job's budget and attributed to the job in the usage ledger; a
  job whose chat got a ``/stop`` before it started is skipped with an ``error`` event.
* ``cron_tick()``: a periodic task every minute; due cron slots become envelopes submitted
  like any message (``agent.cron.CronStore.claim_due``).
* ``goal_step(goal_id)``: one step of a ``/goal`` (``agent.goal_runner``); it queues the next
  step itself (at once, or after the user's turn when it yielded) until the goal ends or is
  paused.  A step that raised ends its goal as ``failed`` with a message to the user: retrying
  a step that crashed would spend the goal's budget on the same crash.
* ``recover()``: at worker start-up, re-enqueue ledger envelopes that are unfinished and not in
  Huey's queue (a worker SIGKILLed mid-turn took them off the queue), queue a step for every
  active goal that has none queued (goals persist in ``goals.db``), then claim missed cron
  slots within the grace window.
"""

from __future__ import annotations

import json
import logging

from huey import SqliteHuey, crontab

from agent.goal_runner import GoalRunner
from agent.history import History
from agent.inbox import OPEN_STATES, InboxState
from agent.turn import TurnRunner
from wire import logs
from wire.errors import MalformedMessage
from wire.protocol import JOB, Envelope, Event, messages_stream

log = logging.getLogger(__name__)

# Huey priority of chat messages and cron runs: above every job's (the Jobs API accepts 0-100).
MESSAGE_PRIORITY = 1000
JOB_CANCELLED_TEXT = "This job was cancelled before it started."

APOLOGY_TEXT = ("Sorry — something went wrong on my side and I couldn't answer that message, even "
                "after several tries. The team has been notified; please send it again in a little while.")


class AgentTasks:
    """The Huey instance and tasks of one tenant's agent.

    Args:
        runtime: the ``agent.runtime.AgentRuntime``.
        immediate: run tasks inline on enqueue (Huey immediate mode, for tests).
        runner: the ``TurnRunner`` (default: a new one over ``runtime``).
    """

    def __init__(self, runtime, *, immediate: bool = False, runner: TurnRunner | None = None):
        self.runtime = runtime
        config = runtime.config
        self.runner = runner or TurnRunner(runtime)
        self.huey = SqliteHuey(name=f"hermes-agent-{config.tenant}",
                               filename=str(config.data_path / "huey.db"), results=False,
                               immediate=immediate, utc=True)
        self.handle_message = self.huey.task(
            retries=max(0, config.task_attempts - 1), retry_delay=config.task_retry_delay,
            retry_backoff=2, context=True, name="handle_message")(self._handle_message)
        self.cron_tick = self.huey.periodic_task(crontab(minute="*"), name="cron_tick")(self._cron_tick)
        self.goal_runner = GoalRunner(runtime, self.runner)
        self.goal_step = self.huey.task(name="goal_step")(self._goal_step)
        runtime.schedule_goal = self.schedule_goal

    def schedule_goal(self, goal_id: int, delay: float = 0.0) -> None:
        """Queue a step of goal ``goal_id`` (after ``delay`` seconds); durable on return."""
        if delay > 0:
            self.goal_step.schedule(args=(goal_id,), delay=delay)
        else:
            self.goal_step(goal_id)

    def submit(self, envelope: Envelope) -> str:
        """Durably queue ``envelope`` unless already handled; return its ledger state.

        The envelope is in the ledger and in Huey's SQLite queue when this returns, so the
        caller may acknowledge the bus entry.
        """
        key = History.chat_key(envelope.channel, envelope.chat_id)
        state = self.runtime.inbox.admit(envelope.id, key, envelope.to_json())
        if state in OPEN_STATES and envelope.id not in self.queued_ids():
            self.handle_message(envelope.to_json(), priority=_priority(envelope))
        return state

    def queued_goal_ids(self) -> set[int]:
        """Return the ids of goals with a step waiting in Huey's queue or schedule."""
        return {task.args[0] for task in list(self.huey.pending()) + list(self.huey.scheduled())
                if task.name.endswith("goal_step") and task.args}

    def queued_ids(self) -> set[str]:
        """Return the envelope ids waiting in Huey's queue or schedule (retries)."""
        ids = set()
        for task in list(self.huey.pending()) + list(self.huey.scheduled()):
            if task.name.endswith("handle_message") and task.args:
                try:
                    ids.add(json.loads(task.args[0])["id"])
                except (ValueError, KeyError, TypeError):
                    continue
        return ids

    def recover(self) -> int:
        """Re-enqueue unfinished envelopes missing from the queue and run missed cron slots.

        Call once at worker start-up, before the consumer runs.  Returns how many envelopes
        were re-enqueued.
        """
        queued = self.queued_ids()
        count = 0
        for envelope_id, payload in self.runtime.inbox.unfinished():
            if envelope_id not in queued:
                log.warning("re-enqueueing envelope %s left unfinished by a previous run", envelope_id)
                self.handle_message(payload, priority=_priority(Envelope.from_json(payload)))
                count += 1
        goals = self.runtime.goals
        goals.release_all()
        waiting = self.queued_goal_ids()
        for goal_id in goals.active_ids():
            if goal_id not in waiting:
                log.warning("re-queueing goal %d left without a step by a previous run", goal_id)
                self.schedule_goal(goal_id)
        self._cron_tick()
        return count

    def _goal_step(self, goal_id: int) -> None:
        try:
            delay = self.goal_runner.step(goal_id)
        except Exception as exc:
            log.exception("goal %d step failed; ending the goal", goal_id)
            goal = self.runtime.goals.set_state(goal_id, "failed", f"an internal error ({type(exc).__name__})")
            if goal is not None:
                self.runtime.publish(Event(
                    message_id=f"goal-{goal.key}-failed", seq=0, kind="final", tenant=self.runtime.tenant,
                    channel=goal.channel, chat_id=goal.chat_id,
                    text=f"Sorry — goal #{goal.id} stopped after {goal.turns} turns because something went "
                         "wrong on my side. The team has been notified; /goal can start it again."))
            return
        if delay is not None:
            self.schedule_goal(goal_id, delay)

    def _handle_message(self, payload: str, task=None) -> None:
        try:
            envelope = Envelope.from_json(payload)
        except MalformedMessage as exc:
            log.error("dropping malformed queued envelope: %s", exc)
            return
        with logs.bound(**logs.envelope_ids(envelope)):
            self._handle(envelope, task)

    def _handle(self, envelope: Envelope, task) -> None:
        inbox = self.runtime.inbox
        if inbox.state(envelope.id) == InboxState.DEAD:
            return
        attempt = inbox.start(envelope.id)
        try:
            if envelope.kind == JOB:
                self._run_job(envelope)
            else:
                self.runner.handle(envelope)
        except Exception as exc:
            last = task is None or not task.retries
            log.exception("turn for envelope %s failed (attempt %d%s)", envelope.id, attempt,
                          ", giving up" if last else ", will retry")
            if last:
                self._dead_letter(envelope, exc, attempt)
                return
            inbox.finish(envelope.id, InboxState.QUEUED, repr(exc))
            raise
        inbox.finish(envelope.id, InboxState.DONE)

    def _run_job(self, envelope: Envelope) -> None:
        """Run a job's turn within its budget (and ``HERMES_TURN_BUDGET_CENTS``), its calls
        attributed to it; skip it with an ``error`` event when its chat was told ``/stop``."""
        runtime = self.runtime
        if runtime.inbox.stop_requested(History.chat_key(envelope.channel, envelope.chat_id), 0.0):
            log.info("job %s cancelled before it started", envelope.chat_id)
            runtime.publish(Event(message_id=envelope.id, seq=0, kind="error", text=JOB_CANCELLED_TEXT,
                                  tenant=envelope.tenant, channel=envelope.channel, chat_id=envelope.chat_id))
            return
        budget = envelope.job_budget_cents() or 0.0
        turn_cap = runtime.config.turn_budget_cents
        job_id = str((envelope.job or {}).get("id", ""))
        with runtime.router.attributed(job_id=job_id):
            self.runner.handle(envelope, budget_cents=min(budget, turn_cap) if turn_cap > 0 else budget)

    def _dead_letter(self, envelope: Envelope, exc: Exception, attempts: int) -> None:
        runtime = self.runtime
        runtime.inbox.finish(envelope.id, InboxState.DEAD, repr(exc))
        record = {"envelope": json.loads(envelope.to_json()), "reason": repr(exc), "attempts": attempts}
        runtime.bus.append(f"{messages_stream(envelope.tenant)}:dead", json.dumps(record),
                           idempotency_key=envelope.id)
        log.error("dead-lettered envelope %s after %d attempts: %r", envelope.id, attempts, exc)
        runtime.publish(Event(message_id=envelope.id, seq=0, kind="error", text=APOLOGY_TEXT,
                              tenant=envelope.tenant, channel=envelope.channel, chat_id=envelope.chat_id))

    def _cron_tick(self) -> None:
        for run in self.runtime.cron.claim_due(self.runtime.config.cron_grace):
            log.info("cron job %s fires for %s", run.job.id, run.scheduled_at)
            self.submit(run.envelope)


def _priority(envelope: Envelope) -> int:
    """Huey priority of ``envelope``: a job's own, else ``MESSAGE_PRIORITY``."""
    return envelope.job_priority() if envelope.kind == JOB else MESSAGE_PRIORITY
