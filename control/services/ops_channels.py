"""Channels and deliveries of mission control (issue 21): each platform's health (the
watchdog's verdict, ``channel_watchdog.check``), its replies of the last 24 hours by outcome,
and the latest failed and recovered deliveries."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from peewee import fn

from control.models import Delivery, DeliveryState, utcnow
from control.services import channel_watchdog

#: The outcome counts' window (hours) and how many failed / recovered deliveries are listed.
WINDOW_HOURS = 24
LATEST = 50


@dataclass(frozen=True)
class ChannelRow:
    """One channel: ``healthy`` (None: the watchdog has nothing to judge it by, e.g. ``web``),
    the watchdog's ``reason`` when deaf, and ``{state: count}`` of the replies started in the
    window plus ``recovered`` (delivered after a crash, found by the platform lookup)."""

    channel: str
    healthy: bool | None
    reason: str
    outcomes: dict[str, int] = field(default_factory=dict)
    recovered: int = 0


def channels(now: datetime | None = None) -> list[ChannelRow]:
    """Every channel with replies in the window or a watchdog verdict, by name."""
    now = now or utcnow()
    since = now - timedelta(hours=WINDOW_HOURS)
    outcomes: dict[str, dict[str, int]] = defaultdict(dict)
    recovered: dict[str, int] = defaultdict(int)
    rows: list[tuple[str, str, bool, int]] = list(
        Delivery.select(Delivery.channel, Delivery.state, Delivery.recovered,  # type: ignore[arg-type]
                        fn.COUNT(Delivery.id))
        .where(Delivery.created_at >= since)
        .group_by(Delivery.channel, Delivery.state, Delivery.recovered).tuples())
    for channel, state, was_recovered, count in rows:
        outcomes[channel][state] = outcomes[channel].get(state, 0) + count
        if was_recovered:
            recovered[channel] += count
    verdicts = {v.channel: v for v in channel_watchdog.check(now)}
    return [ChannelRow(channel=name,
                       healthy=verdicts[name].healthy if name in verdicts else None,
                       reason=verdicts[name].reason if name in verdicts else "",
                       outcomes={s.value: outcomes[name].get(s.value, 0) for s in DeliveryState},
                       recovered=recovered[name])
            for name in sorted(set(outcomes) | set(verdicts))]


def latest(state: str, recovered_only: bool = False) -> list[Delivery]:
    """The latest ``LATEST`` deliveries in ``state`` (``failed``; or ``delivered`` with
    ``recovered_only``), newest first."""
    query = Delivery.select().where(Delivery.state == state)
    if recovered_only:
        query = query.where(Delivery.recovered == True)  # noqa: E712 (peewee expression)
    return list(query.order_by(Delivery.id.desc()).limit(LATEST))
