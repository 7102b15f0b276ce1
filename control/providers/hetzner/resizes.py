"""Downgrades scheduled for the end of the billing period.

An upgrade is applied at once; a downgrade waits until the period the user paid for ends
(DESIGN.md, "Plans and sizes"; issue 5).  The provisioner records the wish here and the control
plane's billing code applies it at the period end (``HetznerProvisioner.apply_scheduled_resize``).
Servers are created with ``keep_disk=True`` so Hetzner allows the smaller type later (Hetzner
Cloud API, "Change the Type of a Server": ``upgrade_disk=false`` keeps a downgrade possible).

Records live in one JSON file, written atomically under a file lock.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from control.providers.hetzner.locking import StackLock

_LOCK_NAME = "scheduled-resizes"


@dataclass(frozen=True)
class ScheduledResize:
    """A downgrade waiting for the period end.

    Attributes:
        tenant: tenant id.
        from_plan: plan at the time of the request.
        to_plan: plan to apply at the period end.
        requested_at: ISO 8601 UTC timestamp of the request.
    """

    tenant: str
    from_plan: str
    to_plan: str
    requested_at: str


class ScheduledResizes:
    """The set of scheduled downgrades, one per tenant (a newer request replaces an older one)."""

    def __init__(self, state_dir: str | os.PathLike, lock: StackLock):
        self.path = Path(state_dir) / "scheduled_resizes.json"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = lock

    def _read(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text() or "{}")

    def _write(self, records: dict[str, dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, sort_keys=True, indent=1))
        os.replace(tmp, self.path)

    def schedule(self, tenant: str, from_plan: str, to_plan: str) -> ScheduledResize:
        """Record (or replace) ``tenant``'s downgrade and return it."""
        record = ScheduledResize(tenant, from_plan, to_plan,
                                 dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
        with self._lock.hold(_LOCK_NAME):
            records = self._read()
            records[tenant] = asdict(record)
            self._write(records)
        return record

    def get(self, tenant: str) -> ScheduledResize | None:
        """Return ``tenant``'s scheduled downgrade, if any."""
        record = self._read().get(tenant)
        return ScheduledResize(**record) if record else None

    def all(self) -> list[ScheduledResize]:
        """Return every scheduled downgrade, by tenant."""
        return [ScheduledResize(**r) for _, r in sorted(self._read().items())]

    def cancel(self, tenant: str) -> bool:
        """Forget ``tenant``'s scheduled downgrade; return whether there was one."""
        with self._lock.hold(_LOCK_NAME):
            records = self._read()
            found = records.pop(tenant, None) is not None
            if found:
                self._write(records)
        return found
