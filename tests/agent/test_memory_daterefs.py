"""Reading the calendar periods a memory query names."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from agent.memory.daterefs import named_periods

NOW = datetime(2026, 3, 18, 15, 30, tzinfo=UTC).timestamp()  # a Wednesday


def span(start: datetime, end: datetime) -> tuple[float, float]:
    return start.timestamp(), end.timestamp()


@pytest.mark.parametrize(("query", "expected"), [
    ("What did Maria plan on the evening of 7 July, 2023?",
     span(datetime(2023, 7, 7, tzinfo=UTC), datetime(2023, 7, 8, tzinfo=UTC))),
    ("What painting did she show on October 13, 2023?",
     span(datetime(2023, 10, 13, tzinfo=UTC), datetime(2023, 10, 14, tzinfo=UTC))),
    ("What happened on the 3rd of June 2023?",
     span(datetime(2023, 6, 3, tzinfo=UTC), datetime(2023, 6, 4, tzinfo=UTC))),
    ("Which class did she start in December 2023?",
     span(datetime(2023, 12, 1, tzinfo=UTC), datetime(2024, 1, 1, tzinfo=UTC))),
    ("What did he win in the beginning of Nov 2022?",
     span(datetime(2022, 11, 1, tzinfo=UTC), datetime(2022, 12, 1, tzinfo=UTC))),
    ("What charity event did John organise in 2024?",
     span(datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC))),
    ("What did I tell you yesterday?", span(datetime(2026, 3, 17, tzinfo=UTC), datetime(2026, 3, 18, tzinfo=UTC))),
    ("What did we plan last week?", span(datetime(2026, 3, 9, tzinfo=UTC), datetime(2026, 3, 16, tzinfo=UTC))),
    ("Anything new last month?", span(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))),
])
def test_a_named_date_becomes_its_calendar_period(query, expected):
    assert named_periods(query, NOW) == [expected]


def test_a_day_inside_a_sentence_is_not_read_again_as_its_month():
    assert named_periods("Who came to dinner on May 3, 2023?", NOW) == [
        span(datetime(2023, 5, 3, tzinfo=UTC), datetime(2023, 5, 4, tzinfo=UTC))]


def test_an_absolute_date_wins_over_relative_words():
    assert named_periods("What did she finish last Friday on 23 January, 2022?", NOW) == [
        span(datetime(2022, 1, 23, tzinfo=UTC), datetime(2022, 1, 24, tzinfo=UTC))]


@pytest.mark.parametrize("query", [
    "What may happen if she moves?",
    "Where is the march on Saturday?",
    "Which 2023 films did he like?",
    "What happened on 31 February, 2023?",
    "How does Nate look after his turtles?",
])
def test_text_without_a_real_date_names_no_period(query):
    assert named_periods(query, NOW) == []


def test_calendar_days_are_the_users_own():
    new_york = ZoneInfo("America/New_York")
    late_evening = datetime(2026, 3, 17, 22, 0, tzinfo=new_york).timestamp()  # 02:00 UTC on 18 March
    assert named_periods("What did I say yesterday?", late_evening, new_york) == [
        span(datetime(2026, 3, 16, tzinfo=new_york), datetime(2026, 3, 17, tzinfo=new_york))]
    # The day the clocks went forward (8 March 2026 in New York) is 23 hours long.
    start, end = named_periods("What happened on 8 March, 2026?", late_evening, new_york)[0]
    assert end - start == 23 * 3600
