"""Finding orphaned tenant servers: labelled as ours, but no stack (or no tenant) owns them.

Every tenant server carries ``app=hermes, env=<env>, tenant=<id>, plan=<plan>`` (DESIGN.md,
"Contracts").  The sweep lists ``app=hermes,env=<env>`` through the hcloud API (one paginated
listing, docs.hetzner.cloud "Label Selector") and classifies each server with a ``tenant`` label:

* ``no_stack``: no tenant stack exists for that tenant (a stack removed while its server lived,
  or a server made by hand);
* ``inactive_tenant``: a stack exists but the control plane no longer has the tenant active;
* ``untracked``: the tenant's stack tracks another server, or none (a create interrupted after
  Hetzner made the server but before Pulumi recorded it).

Servers without a ``tenant`` label (shared hosts, image builders) are never orphans here.
Tenants whose stack is busy (lock held: an ``up`` may be creating the server right now) are
skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Orphan:
    """One orphaned server.

    Attributes:
        server_id: Hetzner server id.
        name: server name.
        tenant: value of its ``tenant`` label.
        reason: ``no_stack`` | ``inactive_tenant`` | ``untracked``.
        has_stack: whether the tenant still has a stack (then removal goes through the stack).
        address: private IP (else public IPv4), for archiving its data; may be ``None``.
    """

    server_id: int
    name: str
    tenant: str
    reason: str
    has_stack: bool
    address: str | None = None


@dataclass
class SweepReport:
    """Result of one sweep.

    Attributes:
        checked: servers examined (all ``app=hermes,env=<env>`` servers).
        orphans: the orphans found.
        removed: ids of the orphans removed (only with ``remove=True``).
        failures: server id → why its removal failed.
        skipped_busy: tenants skipped because their stack was busy.
    """

    checked: int = 0
    orphans: list[Orphan] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    failures: dict[int, str] = field(default_factory=dict)
    skipped_busy: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when there is no orphan left and no failure."""
        return not self.failures and all(o.server_id in self.removed for o in self.orphans)

    def render(self) -> str:
        """Return a human-readable, multi-line summary."""
        lines = [f"orphan sweep: {self.checked} servers checked, {len(self.orphans)} orphan(s)"]
        for o in self.orphans:
            state = ("removed" if o.server_id in self.removed else
                     f"REMOVAL FAILED: {self.failures[o.server_id]}" if o.server_id in
                     self.failures else "left in place")
            lines.append(f"  - server {o.server_id} {o.name} tenant={o.tenant} "
                         f"reason={o.reason}: {state}")
        if self.skipped_busy:
            lines.append(f"  skipped (stack busy): {', '.join(self.skipped_busy)}")
        return "\n".join(lines)


def server_address(server) -> str | None:
    """Return a ``BoundServer``'s first private IP, else its public IPv4, else ``None``."""
    if server.private_net:
        return server.private_net[0].ip
    if server.public_net and server.public_net.ipv4:
        return server.public_net.ipv4.ip
    return None


def find_orphans(
    servers: Iterable,
    tracked: dict[str, int | None],
    known_tenants: set[str] | None = None,
    busy: Callable[[str], bool] = lambda tenant: False,
    report: SweepReport | None = None,
) -> SweepReport:
    """Classify ``servers`` (``BoundServer`` objects) against the tenant stacks.

    Args:
        servers: every ``app=hermes,env=<env>`` server.
        tracked: tenant → server id its stack tracks (``None`` if the stack tracks none), for
            every tenant stack of the environment.
        known_tenants: the control plane's active tenants; ``None`` skips that check.
        busy: whether a tenant's stack is being worked on right now.
        report: a report to fill (a new one by default).
    """
    report = report or SweepReport()
    for server in servers:
        report.checked += 1
        tenant = (server.labels or {}).get("tenant")
        if not tenant:
            continue
        if tenant in tracked and busy(tenant):
            if tenant not in report.skipped_busy:
                report.skipped_busy.append(tenant)
            continue
        if tenant not in tracked:
            reason = "no_stack"
        elif known_tenants is not None and tenant not in known_tenants:
            reason = "inactive_tenant"
        elif tracked[tenant] is None or str(tracked[tenant]) != str(server.id):
            reason = "untracked"
        else:
            continue
        report.orphans.append(Orphan(server.id, server.name, tenant, reason,
                                     has_stack=tenant in tracked,
                                     address=server_address(server)))
    return report
