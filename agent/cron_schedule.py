"""Next fire time of a 5-field cron expression in an IANA zone, correct across DST changes.

Cron expressions describe *wall-clock* times, so we iterate them with croniter on naive local
times and map each candidate to an instant ourselves (zoneinfo, PEP 495):

* Fall-back (a wall time happens twice, e.g. 02:30 on 25 Oct 2026 in Europe/Berlin): the first
  occurrence (``fold=0``) is the run; the repeat is never a second run.
* Spring-forward (a wall time does not exist, e.g. 02:30 on 29 Mar 2026 in Europe/Berlin): the
  run happens at the first valid minute after the gap (03:00 CEST), once, however many
  candidates fell into the gap.

This is the behaviour of Vixie/ISC cron for jobs at a fixed time, made exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

MAX_CANDIDATES = 10_000  # bounds the search for expressions that (almost) never match


class ScheduleError(ValueError):
    """A cron expression or time zone is invalid."""


def validate(expr: str, tz: str) -> ZoneInfo:
    """Check ``expr`` (exactly 5 fields) and ``tz`` (an IANA zone); return the zone.

    Raises:
        ScheduleError: either is invalid (the message says which and why).
    """
    if len(expr.split()) != 5:
        raise ScheduleError(f"a cron schedule has 5 fields (minute hour day month weekday), got {expr!r}")
    if not croniter.is_valid(expr):
        raise ScheduleError(f"invalid cron schedule {expr!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {tz!r} (use Area/City, e.g. Europe/Berlin)") from exc


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    aware = naive.replace(tzinfo=zone)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    return back == naive


def _instant(naive: datetime, zone: ZoneInfo) -> datetime:
    """Return the UTC instant a local wall time fires at (first occurrence; gap → gap end)."""
    if not _exists(naive, zone):
        probe = naive
        while not _exists(probe, zone):  # gaps are at most a few hours; minutes step is cheap
            probe += timedelta(minutes=1)
        naive = probe
    return naive.replace(tzinfo=zone, fold=0).astimezone(UTC)


def next_run(expr: str, tz: str, after: datetime) -> datetime:
    """Return the first fire instant strictly after ``after``, as an aware UTC datetime.

    Args:
        expr: 5-field cron expression in wall-clock time of ``tz``.
        tz: IANA zone name.
        after: an aware datetime (any zone).

    Raises:
        ScheduleError: invalid expression or zone, or no fire time found.
    """
    zone = validate(expr, tz)
    after_utc = after.astimezone(UTC)
    local_after = after_utc.astimezone(zone).replace(tzinfo=None, fold=0)
    # Wall time -> instant is monotonic, so no candidate at or before ``local_after`` can fire
    # after ``after``; later candidates may still map before it (the repeated fall-back hour).
    iterator = croniter(expr, local_after)
    for _ in range(MAX_CANDIDATES):
        candidate = iterator.get_next(datetime)
        fires = _instant(candidate, zone)
        if fires > after_utc:
            return fires
    raise ScheduleError(f"{expr!r} never fires after {after_utc.isoformat()}")
