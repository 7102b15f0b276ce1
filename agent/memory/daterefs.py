"""Calendar periods a query names ("on 7 July, 2023", "in March 2024", "yesterday").

A question that names a date is about what was said then: retrieval lifts memories created in
that period (agent/memory/retrieval.py). Absolute dates are read in the common English forms
("7 July, 2023", "July 7, 2023", "July 2023", "in 2023"); when none is named, the relative
words "today", "yesterday", "this week", "last week", "this month" and "last month" are read
against the store's clock. Periods are calendar days, ISO weeks (Monday first), months or
years of the user's time zone (UTC unless given), converted to the UTC instants that
``created_at`` is stored in.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo

Period = tuple[float, float]

_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december"]
_MONTH = r"(?P<{name}>" + "|".join(m.capitalize() for m in _MONTHS) + r"|" + "|".join(
    m[:3].capitalize() for m in _MONTHS) + r")\.?"
_YEAR = r"(?P<{name}>(?:19|20)\d\d)"
# Month names only capitalised, so the modal "may" and "march on" do not read as dates.
_DAY_MONTH_YEAR = re.compile(r"\b(?P<d>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?" + _MONTH.format(name="m")
                             + r",?\s+" + _YEAR.format(name="y") + r"\b")
_MONTH_DAY_YEAR = re.compile(r"\b" + _MONTH.format(name="m") + r"\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?,?\s+"
                             + _YEAR.format(name="y") + r"\b")
_MONTH_YEAR = re.compile(r"\b" + _MONTH.format(name="m") + r",?\s+(?:of\s+)?" + _YEAR.format(name="y") + r"\b")
_YEAR_ONLY = re.compile(r"\b(?:in|during|of|since)\s+" + _YEAR.format(name="y") + r"\b", re.IGNORECASE)
_RELATIVE = re.compile(r"\b(today|yesterday|this week|last week|this month|last month)\b", re.IGNORECASE)


def _month_number(name: str) -> int:
    return _MONTHS.index(next(m for m in _MONTHS if m.startswith(name.lower()[:3]))) + 1


def _day(year: int, month: int, day: int, zone: tzinfo) -> Period | None:
    try:
        start = datetime(year, month, day, tzinfo=zone)
    except ValueError:
        return None
    return start.timestamp(), (start + timedelta(days=1)).timestamp()


def _month(year: int, month: int, zone: tzinfo) -> Period:
    start = datetime(year, month, 1, tzinfo=zone)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
    return start.timestamp(), end.timestamp()


def _relative(word: str, now: float, zone: tzinfo) -> Period:
    # Wall-clock arithmetic on aware datetimes keeps local midnights across DST changes.
    today = datetime.fromtimestamp(now, zone).replace(hour=0, minute=0, second=0, microsecond=0)
    week = today - timedelta(days=today.weekday())
    month = today.replace(day=1)
    previous_month = (month - timedelta(days=1)).replace(day=1)
    start, end = {
        "today": (today, today + timedelta(days=1)),
        "yesterday": (today - timedelta(days=1), today),
        "this week": (week, week + timedelta(days=7)),
        "last week": (week - timedelta(days=7), week),
        "this month": (month, today + timedelta(days=1)),
        "last month": (previous_month, month),
    }[word.lower()]
    return start.timestamp(), end.timestamp()


def named_periods(query: str, now: float, zone: tzinfo = UTC) -> list[Period]:
    """The periods ``query`` names, as (start, end) Unix seconds, end exclusive; [] if none.

    Days come from "7 July, 2023" / "July 7, 2023", months from "July 2023", years from
    "in 2023"; a span already covered by a more specific match is not read again. ``now``
    (Unix seconds) anchors the relative words, used only when no absolute date is named.
    Calendar boundaries are midnights in ``zone`` (a zoneinfo.ZoneInfo; UTC by default).
    Impossible dates ("31 February, 2023") are ignored.
    """
    periods: list[Period] = []
    taken: list[tuple[int, int]] = []

    def claim(match: re.Match) -> bool:
        if any(match.start() < end and start < match.end() for start, end in taken):
            return False
        taken.append(match.span())
        return True

    for pattern in (_DAY_MONTH_YEAR, _MONTH_DAY_YEAR):
        for match in pattern.finditer(query):
            if claim(match):
                day = _day(int(match["y"]), _month_number(match["m"]), int(match["d"]), zone)
                if day:
                    periods.append(day)
    for match in _MONTH_YEAR.finditer(query):
        if claim(match):
            periods.append(_month(int(match["y"]), _month_number(match["m"]), zone))
    for match in _YEAR_ONLY.finditer(query):
        if claim(match):
            year = int(match["y"])
            periods.append((datetime(year, 1, 1, tzinfo=zone).timestamp(),
                            datetime(year + 1, 1, 1, tzinfo=zone).timestamp()))
    if not periods:
        periods = [_relative(match.group(1), now, zone) for match in _RELATIVE.finditer(query)]
    return periods
