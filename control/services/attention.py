"""Operator attention items: things a human must look at (unknown plan, failed machine, ...)."""

from __future__ import annotations

import logging

from control.models import AttentionItem

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
