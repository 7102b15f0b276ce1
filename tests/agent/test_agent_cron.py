"""Cron: DST-correct fire times with a frozen clock (2026 changes in Berlin and New York),
restart recovery within / beyond the grace window, and runs reaching the originating chat."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from agent.cron import CronStore, ScheduleError


class FrozenClock:
    """A wall clock the test moves by hand (Unix seconds)."""

    def __init__(self, moment: datetime):
        self.now = moment.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def _simulate(tmp_path, expr: str, tz: str, start: datetime, hours: int) -> list[str]:
    """Tick every minute like the Huey periodic task; return local fire times (ISO, with offset)."""
    clock = FrozenClock(start)
    store = CronStore(tmp_path / "cron.db", "t1", clock=clock)
    store.add("telegram", "c1", expr, tz, "ping")
    fired = []
    for _ in range(hours * 60):
        clock.advance(60)
        for run in store.claim_due(grace=3600):
            fired.append(datetime.fromtimestamp(run.scheduled_at, ZoneInfo(tz)).isoformat())
    return fired


@pytest.mark.parametrize(("tz", "start", "expected"), [
    # Europe/Berlin springs forward 29 Mar 2026 02:00 CET -> 03:00 CEST: 02:30 does not exist.
    ("Europe/Berlin", _utc(2026, 3, 28, 0), ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00",
                                               "2026-03-30T02:30:00+02:00"]),
    # Europe/Berlin falls back 25 Oct 2026 03:00 CEST -> 02:00 CET: 02:30 happens twice, runs once.
    ("Europe/Berlin", _utc(2026, 10, 24, 0), ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00",
                                                "2026-10-26T02:30:00+01:00"]),
    # America/New_York springs forward 8 Mar 2026 02:00 EST -> 03:00 EDT.
    ("America/New_York", _utc(2026, 3, 7, 5), ["2026-03-07T02:30:00-05:00", "2026-03-08T03:00:00-04:00",
                                                 "2026-03-09T02:30:00-04:00"]),
])
def test_daily_job_at_a_dst_sensitive_time(tmp_path, tz, start, expected):
    assert _simulate(tmp_path, "30 2 * * *", tz, start, hours=72) == expected


def test_new_york_fall_back_runs_the_repeated_hour_once(tmp_path):
    # 1 Nov 2026 02:00 EDT -> 01:00 EST: 01:00 and 01:30 happen twice.
    fired = _simulate(tmp_path, "*/30 1 * * *", "America/New_York", _utc(2026, 11, 1, 4), hours=6)
    assert fired == ["2026-11-01T01:00:00-04:00", "2026-11-01T01:30:00-04:00"]


def test_hourly_job_keeps_local_wall_clock_hours_across_spring_forward(tmp_path):
    fired = _simulate(tmp_path, "0 * * * *", "Europe/Berlin", _utc(2026, 3, 28, 23, 30), hours=5)
    assert fired == ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00",
                     "2026-03-29T05:00:00+02:00", "2026-03-29T06:00:00+02:00"]


def test_jobs_survive_a_restart_and_a_missed_run_within_grace_runs_once(tmp_path):
    clock = FrozenClock(_utc(2026, 6, 1, 7, 0))
    store = CronStore(tmp_path / "cron.db", "t1", clock=clock)
    job = store.add("telegram", "c1", "0 * * * *", "UTC", "hourly check")
    del store
    clock.advance(3 * 3600 + 600)  # down from 07:00 to 10:10: 08:00, 09:00, 10:00 missed
    restarted = CronStore(tmp_path / "cron.db", "t1", clock=clock)
    runs = restarted.claim_due(grace=3 * 3600)
    assert len(runs) == 1 and runs[0].job.id == job.id  # one catch-up run, not three
    assert restarted.get(job.id).next_run_at == _utc(2026, 6, 1, 11).timestamp()
    assert restarted.claim_due(grace=3 * 3600) == []


def test_a_run_missed_beyond_grace_is_skipped_and_noted(tmp_path):
    clock = FrozenClock(_utc(2026, 6, 1, 7, 0))
    store = CronStore(tmp_path / "cron.db", "t1", clock=clock)
    job = store.add("telegram", "c1", "0 8 * * *", "UTC", "morning brief")
    clock.advance(5 * 3600)  # 12:00: the 08:00 run is 4 h late
    assert CronStore(tmp_path / "cron.db", "t1", clock=clock).claim_due(grace=3600) == []
    noted = store.get(job.id)
    assert "skipped the run of 2026-06-01 08:00 UTC" in noted.note
    assert noted.next_run_at == _utc(2026, 6, 2, 8).timestamp()


def test_invalid_schedules_are_refused(tmp_path):
    store = CronStore(tmp_path / "cron.db", "t1")
    with pytest.raises(ScheduleError, match="5 fields"):
        store.add("telegram", "c1", "* * * *", "UTC", "x")
    with pytest.raises(ScheduleError, match="time zone"):
        store.add("telegram", "c1", "0 8 * * *", "Mars/Olympus", "x")


def test_cron_run_is_answered_in_the_originating_chat(make_runtime, standin, helpers):
    from agent.tasks import AgentTasks

    clock = FrozenClock(_utc(2026, 6, 1, 7, 59, 30))
    runtime = make_runtime(clock=clock)
    tasks = AgentTasks(runtime, immediate=True)
    job = runtime.cron.add("slack", "C42", "0 8 * * *", "UTC", "Give me the morning brief")
    standin.script(["Good morning! Here is your brief."])
    clock.advance(45)
    tasks.cron_tick.call_local()
    [event] = [e for e in helpers.all_events(runtime.bus) if e.kind == "final"]
    assert (event.channel, event.chat_id, event.text) == ("slack", "C42", "Good morning! Here is your brief.")
    assert standin.requests[0]["json"]["messages"][-1]["content"] == "Give me the morning brief"
    assert runtime.cron.runs(job.id) == [(_utc(2026, 6, 1, 8).timestamp(), "run")]
    tasks.cron_tick.call_local()  # the same slot never runs twice
    assert len(standin.requests) == 1


def test_a_cron_runs_envelope_id_cannot_be_computed_by_another_tenant(tmp_path):
    """Two agents with the same tenant, job and slot get different ids: nothing about a run lets
    another tenant work out its id and claim it first at the control plane (issue #19)."""
    ids = []
    for name in ("first", "second"):
        clock = FrozenClock(_utc(2026, 6, 1, 7, 59))
        store = CronStore(tmp_path / f"{name}.db", "t1", clock=clock)
        store.add("telegram", "c1", "0 8 * * *", "UTC", "morning brief")
        clock.advance(120)
        (run,) = store.claim_due(grace=3600)
        ids.append(run.envelope.id)
    assert ids[0] != ids[1] and all(len(i) == 32 for i in ids)
