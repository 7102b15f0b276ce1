"""Operator attention items: things a human must look at (unknown plan, failed machine, ...)."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from control.errors import BadRequest, Conflict, NotFound
from control.models import AttentionItem, utcnow

log = logging.getLogger(__name__)


def raise_attention(kind: str, subject: str, detail: str) -> AttentionItem:
    """Record an attention item once per open ``(kind, subject)`` and log it.

    Args:
        kind: short category, e.g. ``unknown_plan``, ``provisioning_failed``, ``dead_letter``.
        subject: what it is about (a tenant id, a Stripe subscription id, ...).
        detail: human-readable explanation.

    Returns:
        The open item (an existing one is reused so retries do not pile up duplicates).
    """
    existing = AttentionItem.get_or_none(
        (AttentionItem.kind == kind) & (AttentionItem.subject == subject)
        & AttentionItem.resolved_at.is_null()
    )
    if existing is not None:
        return existing
    log.warning("attention %s %s: %s", kind, subject, detail)
    return AttentionItem.create(kind=kind, subject=subject, detail=detail)


def open_items() -> list[AttentionItem]:
    """Return unresolved attention items, oldest first."""
    return list(AttentionItem.select().where(AttentionItem.resolved_at.is_null())
                .order_by(AttentionItem.id))


# Handling an item from mission control (issue 21).  Each function returns the item's state
# before and after (``state``), for the audit row the caller writes in the same transaction.
#: The longest note and snooze an operator may give (characters; hours: a week).
MAX_NOTE = 2000
MAX_SNOOZE_HOURS = 168


def state(item: AttentionItem) -> dict[str, Any]:
    """The handling fields of ``item`` as JSON-ready values (times ISO 8601 or None)."""
    fields = ("acknowledged_at", "acknowledged_by", "assignee", "snoozed_until", "resolved_at",
              "resolved_by", "resolution")
    return {name: (value.isoformat() if isinstance(value, datetime) else value)
            for name in fields for value in [getattr(item, name)]}


def as_dict(item: AttentionItem) -> dict[str, Any]:
    """An item as JSON-ready values: id, kind, subject, detail, created_at and ``state``'s
    handling fields (times ISO 8601 or None)."""
    return {"id": item.id, "kind": item.kind, "subject": item.subject, "detail": item.detail,
            "created_at": item.created_at.isoformat(), **state(item)}


def queue(now: datetime | None = None) -> list[AttentionItem]:
    """Open items that are not snoozed (an item whose snooze ended is back), oldest first."""
    now = now or utcnow()
    return list(AttentionItem.select().where(
        AttentionItem.resolved_at.is_null()
        & (AttentionItem.snoozed_until.is_null() | (AttentionItem.snoozed_until <= now)))
        .order_by(AttentionItem.id))


def _open(item_id: int) -> AttentionItem:
    item = AttentionItem.get_or_none(AttentionItem.id == item_id)
    if item is None:
        raise NotFound(f"no attention item {item_id}")
    if item.resolved_at is not None:
        raise Conflict(f"attention item {item_id} is resolved already")
    return item


def _change(item_id: int, **changes) -> tuple[dict, dict]:
    item = _open(item_id)
    before = state(item)
    for name, value in changes.items():
        setattr(item, name, value)
    item.save()
    return before, state(item)


def acknowledge(item_id: int, by: str) -> tuple[dict, dict]:
    """Mark an open item seen by operator ``by``; returns ``(before, after)``.

    Raises:
        NotFound: no such item.  Conflict: it is resolved.
    """
    return _change(item_id, acknowledged_at=utcnow(), acknowledged_by=by)


def assign(item_id: int, assignee: str) -> tuple[dict, dict]:
    """Give an open item to ``assignee`` (an operator's e-mail; "" unassigns).

    Raises:
        NotFound, Conflict: as ``acknowledge``.
    """
    return _change(item_id, assignee=assignee or None)


def snooze(item_id: int, hours: int, now: datetime | None = None) -> tuple[dict, dict]:
    """Hide an open item from ``queue`` for ``hours`` (1 to ``MAX_SNOOZE_HOURS``).

    Raises:
        BadRequest: hours out of range.  NotFound, Conflict: as ``acknowledge``.
    """
    if not 1 <= hours <= MAX_SNOOZE_HOURS:
        raise BadRequest(f"snooze for 1 to {MAX_SNOOZE_HOURS} hours")
    return _change(item_id, snoozed_until=(now or utcnow()) + timedelta(hours=hours))


def resolve(item_id: int, by: str, note: str) -> tuple[dict, dict]:
    """Resolve an open item with a note (1 to ``MAX_NOTE`` characters).

    Raises:
        BadRequest: no note, or too long.  NotFound, Conflict: as ``acknowledge``.
    """
    note = (note or "").strip()
    if not 1 <= len(note) <= MAX_NOTE:
        raise BadRequest(f"a resolution note of 1 to {MAX_NOTE} characters is required")
    return _change(item_id, resolved_at=utcnow(), resolved_by=by, resolution=note)
