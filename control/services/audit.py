"""The audit trail of mission control (issue 21): one append-only row per change.

Every change an operator makes in ``/ops`` and every change made through ``hermes operators``
or ``hermes tenants`` writes exactly one ``AuditEntry``: who (``Actor``), what (``action``),
to what (``target``), the state before and after (JSON), when and from where.  Rows are only
inserted here; nothing in the code base updates or deletes them.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from control.models import AuditEntry

#: Rows one query returns at most (the page and the JSON export), newest first.
MAX_ROWS = 1000


@dataclass(frozen=True)
class Actor:
    """Who makes a change.

    Attributes:
        name: the operator's e-mail, or ``cli:<OS user>``.
        role: the operator's role (``viewer`` | ``operator`` | ``admin``), or ``cli``.
        source: the client address of the request, or ``cli``.
    """

    name: str
    role: str
    source: str

    @classmethod
    def cli(cls) -> Actor:
        """The person at the ``hermes`` command line (their OS login name)."""
        try:
            user = getpass.getuser()
        except (KeyError, OSError):  # no passwd entry for the uid (a container)
            user = "unknown"
        return cls(name=f"cli:{user}", role="cli", source="cli")


def _json(value: Any) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, default=str)


def record(actor: Actor, action: str, target: str, before: Any = None,
           after: Any = None) -> AuditEntry:
    """Append one audit row; call it in the transaction of the change it describes.

    Args:
        actor: who made the change.
        action: dotted name, e.g. ``attention.resolve``, ``machine.reprovision``.
        target: what changed, e.g. ``attention:7``, ``tenant:5``, ``operator:a@b.c``.
        before, after: JSON-serializable states (None: nothing); secrets never go here.

    Returns:
        The new row.
    """
    return AuditEntry.create(actor=actor.name, role=actor.role, action=action, target=target,
                             before=_json(before), after=_json(after), source=actor.source)


def query(actor: str = "", action: str = "", target: str = "", since: datetime | None = None,
          until: datetime | None = None, limit: int = MAX_ROWS) -> list[AuditEntry]:
    """Return audit rows, newest first, filtered.

    Args:
        actor: exact actor name ("" = any).
        action: action, or its prefix ending in ``.`` (``attention.``) ("" = any).
        target: exact target ("" = any).
        since, until: naive UTC bounds on ``created_at`` (inclusive; None = open).
        limit: at most this many rows (capped at ``MAX_ROWS``).
    """
    rows = AuditEntry.select()
    if actor:
        rows = rows.where(AuditEntry.actor == actor)
    if action:
        rows = rows.where(AuditEntry.action.startswith(action) if action.endswith(".")
                          else AuditEntry.action == action)
    if target:
        rows = rows.where(AuditEntry.target == target)
    if since is not None:
        rows = rows.where(AuditEntry.created_at >= since)
    if until is not None:
        rows = rows.where(AuditEntry.created_at <= until)
    return list(rows.order_by(AuditEntry.id.desc()).limit(max(1, min(limit, MAX_ROWS))))


def record_deploy(version: str, schema: int) -> AuditEntry | None:
    """Record that the control plane now runs ``version`` (action ``deploy``, target
    ``control``), unless the latest deploy recorded is that version already.  ``hermes db
    upgrade`` calls it: every deploy runs it (roles/control), and reruns add nothing.

    Returns:
        The new row, or None when ``version`` was the latest recorded.
    """
    last = latest("deploy")
    before = json.loads(last.after) if last and last.after else None
    if before is not None and before.get("version") == version:
        return None
    return record(Actor.cli(), "deploy", "control", before,
                  {"version": version, "schema": schema})


def latest(action: str) -> AuditEntry | None:
    """The newest row of ``action`` (exact), or None."""
    return (AuditEntry.select().where(AuditEntry.action == action)
            .order_by(AuditEntry.id.desc()).first())


def as_dict(entry: AuditEntry) -> dict[str, Any]:
    """The JSON export shape of a row: ``id``, ``at`` (ISO 8601, UTC), ``actor``, ``role``,
    ``action``, ``target``, ``before``/``after`` (decoded JSON or None), ``source``."""
    return {"id": entry.id, "at": entry.created_at.isoformat() + "Z", "actor": entry.actor,
            "role": entry.role, "action": entry.action, "target": entry.target,
            "before": json.loads(entry.before) if entry.before else None,
            "after": json.loads(entry.after) if entry.after else None, "source": entry.source}
