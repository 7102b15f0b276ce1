"""History of mission control (issue 21): provisioning time, messages, LLM spend and errors
per time bucket over 24 hours, 7 days or 30 days, for the charts of ``/ops/history``.

Each series is one ``GROUP BY`` over a bucket number computed in SQL (seconds since the epoch
divided by the bucket's length), so no query walks rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from peewee import SQL, Case, Cast, NodeList, PostgresqlDatabase, fn

from control.db import database
from control.errors import BadRequest
from control.models import Delivery, DeliveryState, LlmCall, Machine, Message, utcnow

#: Ranges: name -> (window seconds, bucket seconds): 24 hourly bars, 28 six-hour bars, 30
#: daily bars.
RANGES = {"24h": (86400, 3600), "7d": (7 * 86400, 6 * 3600), "30d": (30 * 86400, 86400)}


@dataclass(frozen=True)
class Series:
    """One chart: its ``name``, ``unit`` and one value per bucket, oldest first, with each
    bucket's start (naive UTC)."""

    name: str
    unit: str
    starts: list[datetime]
    values: list[float]


def _bucket(field: Any, seconds: int) -> Any:
    """The SQL bucket number of a naive-UTC timestamp column: floor(epoch / seconds)."""
    if isinstance(database.obj, PostgresqlDatabase):
        return fn.FLOOR(_pg_epoch(field) / seconds)
    return Cast(fn.strftime("%s", field), "INTEGER") / seconds


def _pg_epoch(value: Any) -> Any:
    """PostgreSQL's ``EXTRACT(EPOCH FROM value)``: seconds, a naive timestamp read as UTC."""
    return fn.EXTRACT(NodeList((SQL("EPOCH FROM"), value)))


def _epoch(moment: datetime) -> float:
    return moment.replace(tzinfo=UTC).timestamp()


def history(which: str, now: datetime | None = None) -> list[Series]:
    """The four series of range ``which`` (a key of ``RANGES``).

    Series: ``messages`` (inbound, count), ``spend`` (LLM-gateway cost, US cents),
    ``errors`` (failed replies plus LLM calls answered >= 400, count) and ``provisioning``
    (mean seconds from request to ready of the machines that became ready in the bucket;
    0 with none).

    Raises:
        BadRequest: ``which`` is not a key of ``RANGES``.
    """
    if which not in RANGES:
        raise BadRequest(f"range must be one of {', '.join(RANGES)}")
    window, size = RANGES[which]
    now = now or utcnow()
    last = int(_epoch(now)) // size
    first = last - window // size + 1
    since = datetime.fromtimestamp(first * size, UTC).replace(tzinfo=None)

    def per_bucket(query: Any) -> list[float]:
        values = [0.0] * (last - first + 1)
        for bucket, value in query.tuples():
            index = int(bucket) - first
            if 0 <= index < len(values) and value is not None:
                values[index] += float(value)
        return values

    def grouped(model: Any, field: Any, value: Any, where: Any) -> list[float]:
        bucket = _bucket(field, size)
        return per_bucket(model.select(bucket, value).where(where & (field >= since))
                          .group_by(bucket))

    messages = grouped(Message, Message.created_at, fn.COUNT(Message.id),
                       Message.direction == "in")
    spend = grouped(LlmCall, LlmCall.created_at, fn.SUM(LlmCall.cost_cents), LlmCall.id > 0)
    failed_calls = grouped(LlmCall, LlmCall.created_at,
                           fn.SUM(Case(None, [(LlmCall.status >= 400, 1)], 0)), LlmCall.id > 0)
    failed_replies = grouped(Delivery, Delivery.created_at, fn.COUNT(Delivery.id),
                             Delivery.state == DeliveryState.FAILED.value)
    took = grouped(Machine, Machine.ready_at,
                   fn.AVG(_seconds_between(Machine.requested_at, Machine.ready_at)),
                   Machine.ready_at.is_null(False))
    starts = [datetime.fromtimestamp(b * size, UTC).replace(tzinfo=None)
              for b in range(first, last + 1)]
    return [Series("messages", "messages", starts, messages),
            Series("spend", "US cents", starts, [round(v, 4) for v in spend]),
            Series("errors", "errors", starts,
                   [a + b for a, b in zip(failed_calls, failed_replies, strict=True)]),
            Series("provisioning", "seconds", starts, [round(v, 1) for v in took])]


def _seconds_between(start: Any, end: Any) -> Any:
    """SQL seconds from ``start`` to ``end`` (two naive-UTC timestamp columns)."""
    if isinstance(database.obj, PostgresqlDatabase):
        return _pg_epoch(end - start)
    return fn.strftime("%s", end) - fn.strftime("%s", start)
