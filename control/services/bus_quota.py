"""Per-tenant quota of Redis memory on the bus, enforced from the control side (issue #19,
finding 3).

A tenant's ACL user must keep plain ``XADD``/``SET`` on its own keys (Redis checks the commands
inside ``hermes_append`` against the caller's ACL), and ``proto-max-bulk-len`` caps one argument,
not how many: one ``XADD`` with many ~1 MiB fields, or endless entries and idempotency keys, could
still fill the shared Redis (``maxmemory`` with ``noeviction``: every webhook answers 503).  So
every minute (``control.tasks``, Redis bus only) ``enforce``:

1. sums ``MEMORY USAGE key SAMPLES 0`` (exact, every stream node counted) of each tenant's keys:
   ``hermes:events:{t}`` and everything under ``hermes:events:{t}:`` (its idempotency keys, and
   the dead letters the delivery worker wrote from its events), ``hermes:messages:{t}:dead`` and
   everything under it (the agent's own dead letters and their idempotency keys).  Keys are found
   with two ``SCAN MATCH`` passes over the keyspace for all tenants at once (never ``KEYS``),
   then attributed by name; ``hermes:messages:{t}`` itself is written by the control plane and
   not counted;
2. over the quota of the tenant's plan (``Settings.bus_quota_mb``; a tenant with no known plan
   gets the smallest): trims the entries of its events stream every group has acknowledged
   (``RedisBus.trim_acked``) and measures again;
3. still over: removes the tenant's appends (``bus_acl.set_writes``; its agent's next append
   gets ``NOPERM``, it may still read and acknowledge its messages), raises a
   ``bus_quota_exceeded`` attention item;
4. a suspended tenant gets its appends back once under ``RESUME_RATIO`` of its quota (after the
   delivery worker has consumed its events and they were trimmed), and its item is resolved.
   The hysteresis keeps a tenant hovering at the quota from flapping every minute.  Dead letters
   and idempotency keys (7-day TTL) are never trimmed here: an operator clears dead letters.

The ACL user is the state: a user without append selectors is suspended, so a restart of the
control plane loses nothing.  Tenants without an ACL user are skipped.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from control.models import AttentionItem, Tenant, utcnow
from control.services import bus_acl
from control.services.attention import raise_attention
from control.services.provisioning import is_redis_url
from wire.protocol import events_stream
from wire.redis_bus import RedisBus, connect, translate_errors

log = logging.getLogger(__name__)

MIB = 1024 * 1024
# A suspended tenant writes again under 80 % of its quota: a tenant hovering at the quota would
# otherwise be suspended and released every minute.
RESUME_RATIO = 0.8
ATTENTION_KIND = "bus_quota_exceeded"
_USER = re.compile(r"^hermes-tenant-([A-Za-z0-9_-]+)$")
# SCAN patterns and the tenant each matching key belongs to (tenant ids hold no ``:``,
# ``bus_acl.TENANT_ID``, so the first segment after the prefix is the tenant).
_SCANS = {"hermes:events:*": re.compile(r"^hermes:events:([A-Za-z0-9_-]+)(?::|$)"),
          "hermes:messages:*:dead*": re.compile(r"^hermes:messages:([A-Za-z0-9_-]+):dead(?::|$)")}
_BATCH = 1000  # keys per SCAN step and per MEMORY USAGE pipeline


@dataclass
class QuotaReport:
    """One run of ``enforce``.

    Attributes:
        usage: bytes each tenant with an ACL user holds, after any trimming.
        trimmed: entries removed from each trimmed tenant's events stream.
        suspended: tenants whose appends were removed in this run.
        resumed: tenants whose appends were given back in this run.
    """

    usage: dict[str, int] = field(default_factory=dict)
    trimmed: dict[str, int] = field(default_factory=dict)
    suspended: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)


def tenant_keys(admin: redis.Redis) -> dict[str, list[str]]:
    """Return ``{tenant: [key, ...]}`` of every tenant's counted keys (module docstring, 1).

    Raises:
        BusAuthError, BusUnavailable: as ``wire.redis_bus.translate_errors``.
    """
    keys: dict[str, list[str]] = defaultdict(list)
    with translate_errors(admin, "scan the bus keys"):
        for pattern, owner in _SCANS.items():
            for key in admin.scan_iter(match=pattern, count=_BATCH):
                match = owner.match(key)
                if match:
                    keys[match.group(1)].append(key)
    return dict(keys)


def memory(admin: redis.Redis, keys: list[str]) -> int:
    """Return the bytes ``keys`` hold (``MEMORY USAGE ... SAMPLES 0``; a key gone since: 0).

    Raises:
        BusAuthError, BusUnavailable: as ``wire.redis_bus.translate_errors``.
    """
    total = 0
    with translate_errors(admin, "measure the bus keys"):
        for start in range(0, len(keys), _BATCH):
            pipe = admin.pipeline(transaction=False)
            for key in keys[start:start + _BATCH]:
                pipe.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
            total += sum(int(n or 0) for n in pipe.execute())
    return total


def _quotas(tenants: list[str], quota_mb: dict[str, int]) -> dict[str, int]:
    """``{tenant: quota in bytes}`` from each tenant's plan (the smallest when unknown)."""
    smallest = min(quota_mb.values())
    ids = [int(t) for t in tenants if t.isdigit()]
    plans = {str(row.id): row.plan for row in
             Tenant.select(Tenant.id, Tenant.plan).where(Tenant.id.in_(ids))} if ids else {}
    return {t: quota_mb.get(plans.get(t) or "", smallest) * MIB for t in tenants}


def _suspend(admin: redis.Redis, tenant: str, used: int, quota: int) -> None:
    # The item first: should the ACL change fail, the next run tries it again under the same item.
    raise_attention(
        ATTENTION_KIND, tenant,
        f"tenant {tenant} holds {used / MIB:.1f} MiB on the Redis bus, over its quota of "
        f"{quota / MIB:.0f} MiB after its acknowledged events were trimmed: its appends are "
        f"refused (NOPERM) until it is under {RESUME_RATIO:.0%}.  Its unconsumed events, dead "
        f"letters (hermes:events:{tenant}:dead, hermes:messages:{tenant}:dead) or idempotency "
        f"keys fill it; a compromised agent is likely")
    bus_acl.set_writes(admin, tenant, False)
    log.warning("bus quota: tenant %s holds %d bytes (quota %d); appends suspended",
                tenant, used, quota)


def _resume(admin: redis.Redis, tenant: str, used: int) -> None:
    bus_acl.set_writes(admin, tenant, True)
    log.info("bus quota: tenant %s back under its quota (%d bytes); appends restored", tenant, used)
    (AttentionItem.update(resolved_at=utcnow(), resolved_by="bus_quota",
                          resolution=f"back under {RESUME_RATIO:.0%} of its quota "
                                     f"({used / MIB:.1f} MiB): appends restored")
     .where((AttentionItem.kind == ATTENTION_KIND) & (AttentionItem.subject == tenant)
            & AttentionItem.resolved_at.is_null()).execute())


def enforce(admin: redis.Redis, quota_mb: dict[str, int]) -> QuotaReport:
    """Measure every tenant with an ACL user, trim, suspend and resume (module docstring).

    Args:
        admin: the control plane's admin Redis client (``decode_responses=True``; ``ACL``,
            ``SCAN``, ``MEMORY`` and the bus functions).
        quota_mb: ``{plan: MiB}`` (``Settings.bus_quota_mb``).

    Needs an open database connection (plans, attention items).

    Raises:
        BusAuthError, BusUnavailable: Redis refused or could not be reached; a run stops at
            the first failure and the next minute's starts over.
    """
    with translate_errors(admin, "list the tenant users"):
        tenants = sorted(m.group(1) for user in admin.acl_users() if (m := _USER.match(str(user))))
    keys = tenant_keys(admin)
    quotas = _quotas(tenants, quota_mb)
    bus = RedisBus(admin)
    report = QuotaReport()
    for tenant in tenants:
        allowed = bus_acl.writes_allowed(admin, tenant)
        if allowed is None:  # revoked since ACL USERS
            continue
        quota, own = quotas[tenant], keys.get(tenant, [])
        used = memory(admin, own)
        if used > (quota if allowed else quota * RESUME_RATIO):
            removed = bus.trim_acked(events_stream(tenant), "quota")
            if removed:
                report.trimmed[tenant] = removed
                used = memory(admin, own)
        if allowed and used > quota:
            _suspend(admin, tenant, used, quota)
            report.suspended.append(tenant)
        elif not allowed and used <= quota * RESUME_RATIO:
            _resume(admin, tenant, used)
            report.resumed.append(tenant)
        report.usage[tenant] = used
    return report


def run_from_settings(settings) -> QuotaReport | None:
    """``enforce`` on ``settings.bus_url`` with ``settings.bus_quota_mb``; None (nothing done)
    on the SQLite bus, which is embedded in one host and has no tenant users.

    Raises:
        BusAuthError, BusTLSError, BusUnavailable: as ``enforce`` and ``wire.redis_bus.connect``.
    """
    if not is_redis_url(settings.bus_url):
        return None
    admin = connect(settings.bus_url, ca_file=settings.bus_ca_file)
    try:
        return enforce(admin, settings.bus_quota_mb)
    finally:
        admin.close()


class BusQuotaCollector:
    """Prometheus collector (read from the database at scrape time, as ``FleetCollector``):
    ``hermes_bus_quota_suspensions`` (counter: times a tenant's appends were suspended, one
    ``bus_quota_exceeded`` item each) and ``hermes_bus_quota_suspended`` (gauge: tenants
    suspended now, the open items).

    Args:
        runtime: the ``control.runtime.Runtime`` (database).
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """Yield the counter and the gauge."""
        with self.runtime.db.connection_context():
            items = AttentionItem.select().where(AttentionItem.kind == ATTENTION_KIND)
            total, open_now = items.count(), items.where(AttentionItem.resolved_at.is_null()).count()
        yield CounterMetricFamily("hermes_bus_quota_suspensions",
                                  "Times a tenant's bus appends were suspended over its memory quota",
                                  value=total)
        yield GaugeMetricFamily("hermes_bus_quota_suspended",
                                "Tenants whose bus appends are suspended over their memory quota",
                                value=open_now)
