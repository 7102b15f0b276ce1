"""The warm pool (issue 22): pre-booted, unassigned servers per plan, claimed by payments.

Hosted peers reach a ready agent in 30–60 s from a pool and in about 3 minutes from a snapshot
alone (issue 22); a cold Hetzner create from a snapshot takes ~40 s before the agent even
starts.  ``HERMES_WARM_POOL`` (``light=10,heavy=2``; empty: off) sets how many servers each
plan keeps ready.  One ``PoolServer`` row per server is the source of truth:

* ``top_up`` (a periodic Huey task) retires rows built from another snapshot than the
  provider's current one (``Provisioner.pool_snapshot``) and above the target, deletes their
  servers, then creates the missing ones (``Provisioner.create_pool_server``), each with a
  fresh one-time pool token (only its SHA-256 is stored).
* ``claim`` reserves an ``available`` server for a tenant with a conditional update (``WHERE
  state='available'``: two claims never get one server; the row's ``tenant`` column is unique:
  one tenant never holds two; a replayed provisioning finds its own row again).
* ``assign`` seals the tenant's agent settings (``SecretsBox``) into the row once the provider
  made the server the tenant's machine (``Provisioner.claim_pool_server``).
* ``fetch_config`` is what the pool server's bootstrap calls (``GET /api/pool/config`` with its
  pool token as bearer, over ``HERMES_AGENT_CONTROL_URL``): ``None`` while unassigned (it polls
  again), the settings exactly once when assigned, and the sealed copy is erased.
* ``sweep`` deletes pool servers no row accounts for (orphans) and rows whose server is gone.

Cold provisioning stays the fallback: ``claim`` returning ``None`` (empty pool, a restore from
an archive, a provider without a pool) leaves ``run_provisioning`` on ``Provisioner.provision``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from dataclasses import dataclass, field

from peewee import fn

from control.db import write_transaction
from control.errors import NotFound, ProvisioningError, Unauthorized
from control.models import PoolServer, PoolServerState, utcnow
from control.providers.base import Provisioner
from control.services.secrets_box import SecretsBox

log = logging.getLogger(__name__)

#: Seconds a pool server's bootstrap waits between two config polls (``agent.pool_boot``).
POLL_INTERVAL = 2.0


def hash_token(token: str) -> str:
    """Return the hex SHA-256 of a pool token (what the ``token_hash`` column stores)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class TopUpReport:
    """What one ``top_up`` did.

    Attributes:
        created: plan → provider ids of the servers created.
        retired: provider ids deleted (old snapshot, above target).
        failures: provider id or ``create:<plan>`` → why it failed (retried on the next run).
    """

    created: dict[str, list[str]] = field(default_factory=dict)
    retired: list[str] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def counts() -> dict[tuple[str, str], int]:
    """Return ``{(plan, state): rows}`` of the pool (the ``hermes_warm_pool_servers`` gauge)."""
    rows = (PoolServer.select(PoolServer.plan, PoolServer.state, fn.COUNT(PoolServer.id))
            .group_by(PoolServer.plan, PoolServer.state).tuples().iterator())
    return {(plan, state): n for plan, state, n in rows}


def top_up(provisioner: Provisioner, targets: dict[str, int], control_url: str) -> TopUpReport:
    """Bring every plan's available servers to ``targets`` on the current snapshot.

    Args:
        provisioner: the provider (``pool_snapshot() is None``: it has no pool, nothing done).
        targets: plan → servers to keep available (``Settings.warm_pool``); plans absent: 0.
        control_url: the control plane's URL as servers reach it (``agent_control_url``),
            written into each new server's boot config.

    Returns:
        A ``TopUpReport``.  A failed create or delete is reported, not raised: the next run
        tries again, and a server created without its row is removed by ``sweep``.
    """
    report = TopUpReport()
    snapshot = provisioner.pool_snapshot()
    if snapshot is None:
        return report
    stale = list(PoolServer.select().where(
        (PoolServer.state == PoolServerState.AVAILABLE) & (PoolServer.snapshot != snapshot)))
    for plan in {row.plan for row in PoolServer.select(PoolServer.plan).distinct()} | set(targets):
        current = list(PoolServer.select().where(
            (PoolServer.state == PoolServerState.AVAILABLE) & (PoolServer.plan == plan)
            & (PoolServer.snapshot == snapshot)).order_by(PoolServer.created_at.desc()))
        stale += current[:max(0, len(current) - targets.get(plan, 0))]
    # Rows left retiring by a failed delete (or ``release``) are deleted again.
    stale += list(PoolServer.select().where(PoolServer.state == PoolServerState.RETIRING))
    for row in stale:
        _retire(provisioner, row, report)
    for plan, target in sorted(targets.items()):
        have = PoolServer.select().where(
            (PoolServer.state == PoolServerState.AVAILABLE) & (PoolServer.plan == plan)
            & (PoolServer.snapshot == snapshot)).count()
        for _ in range(max(0, target - have)):
            token = secrets.token_urlsafe(32)
            try:
                info = provisioner.create_pool_server(plan, token, control_url)
            except ProvisioningError as exc:
                report.failures[f"create:{plan}"] = str(exc)
                log.warning("warm pool: creating a %s server failed: %s", plan, exc)
                break
            PoolServer.create(plan=plan, location=info.location, snapshot=info.snapshot,
                              provider_id=info.provider_id, token_hash=hash_token(token),
                              address=info.address)
            report.created.setdefault(plan, []).append(info.provider_id)
    return report


def _retire(provisioner: Provisioner, row: PoolServer, report: TopUpReport) -> None:
    """Take ``row`` out of the pool (conditionally: a claim may have won it meanwhile), delete
    its server, then its row."""
    taken = (PoolServer.update(state=PoolServerState.RETIRING, updated_at=utcnow())
             .where((PoolServer.id == row.id) & PoolServer.state.in_(
                 [PoolServerState.AVAILABLE, PoolServerState.RETIRING])).execute())
    if not taken or row.provider_id in report.retired:
        return
    try:
        provisioner.delete_pool_server(row.provider_id)
    except ProvisioningError as exc:
        report.failures[row.provider_id] = str(exc)
        return
    PoolServer.delete().where(PoolServer.id == row.id).execute()
    report.retired.append(row.provider_id)


def claim(tenant_id: int, plan: str, snapshot: str | None) -> PoolServer | None:
    """Reserve an available pool server of ``plan`` on ``snapshot`` for ``tenant_id``.

    Idempotent: the tenant's own ``claimed`` or ``assigned`` row (a retried or replayed
    provisioning) is returned again, so a replayed payment never claims two servers; a tenant
    whose pool server is ``configured`` (its machine, being provisioned again) gets ``None``.

    Args:
        tenant_id: the paying tenant.
        plan: its plan.
        snapshot: ``Provisioner.pool_snapshot()``; ``None``: the provider has no pool.

    Returns:
        The ``claimed`` row, or ``None`` when the pool has no server for the plan (the caller
        creates one cold).
    """
    if snapshot is None:
        return None
    mine = PoolServer.get_or_none(PoolServer.tenant == tenant_id)
    if mine is not None:
        # Its own claim again; a configured one is its machine already (created cold again).
        return mine if mine.state in (PoolServerState.CLAIMED, PoolServerState.ASSIGNED) else None
    # A list: no SELECT may stay open across the writes below (on SQLite its read snapshot
    # would refuse the upgrade to a write once another claim committed).
    candidates = list(PoolServer.select(PoolServer.id).where(
        (PoolServer.state == PoolServerState.AVAILABLE) & (PoolServer.plan == plan)
        & (PoolServer.snapshot == snapshot))
        # Booted servers first (they called home), then the oldest.
        .order_by(PoolServer.booted_at.is_null(), PoolServer.created_at).limit(5))
    for candidate in candidates:
        with write_transaction():
            won = (PoolServer.update(state=PoolServerState.CLAIMED, tenant=tenant_id,
                                     claimed_at=utcnow(), updated_at=utcnow())
                   .where((PoolServer.id == candidate.id)
                          & (PoolServer.state == PoolServerState.AVAILABLE)).execute())
        if won:
            log.info("warm pool: tenant %s claimed %s server %s", tenant_id, plan, candidate.id)
            return PoolServer.get_by_id(candidate.id)
    return None


def assign(row: PoolServer, env: dict[str, str], box: SecretsBox, address: str | None) -> None:
    """Seal ``env`` (the tenant's agent settings) into ``row`` for its server to fetch once.

    Args:
        row: the tenant's ``claimed`` (or already ``assigned``: a retry) row.
        env: the agent's environment (``MachineSpec.env``); secret, never logged.
        box: encrypts it at rest until fetched.
        address: the server's address as the provider reports it.
    """
    (PoolServer.update(state=PoolServerState.ASSIGNED, sealed_env=box.encrypt(json.dumps(env)),
                       address=address or row.address, updated_at=utcnow())
     .where((PoolServer.id == row.id) & PoolServer.state.in_(
         [PoolServerState.CLAIMED, PoolServerState.ASSIGNED])).execute())


def release(row: PoolServer) -> None:
    """Give up a claimed server whose hand-over failed for good: it is ``retiring`` (deleted by
    the next ``top_up``) and the tenant may claim again or go cold."""
    (PoolServer.update(state=PoolServerState.RETIRING, tenant=None, sealed_env=None,
                       updated_at=utcnow())
     .where((PoolServer.id == row.id) & (PoolServer.state == PoolServerState.CLAIMED)).execute())


def fetch_config(authorization: str, box: SecretsBox) -> dict[str, str] | None:
    """Answer a pool server's bootstrap: its tenant config once assigned, else ``None``.

    The server is identified by its pool token alone (the channel), never by what it sends.

    Args:
        authorization: the request's ``Authorization`` header, ``Bearer <pool token>``.
        box: decrypts the sealed settings.

    Returns:
        The agent's environment (``HERMES_TENANT``, ``HERMES_AGENT_TOKEN``, bus URL...) exactly
        once; ``None`` while the server waits unassigned (its first call marks it booted).

    Raises:
        Unauthorized: no bearer token, or one no pool server holds (401).
        NotFound: the token was used already or its server is retiring (404: the bootstrap
            stops polling).
    """
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("a pool token is required")
    row = PoolServer.get_or_none(PoolServer.token_hash == hash_token(token.strip()))
    if row is None:
        raise Unauthorized("unknown pool token")
    if row.state in (PoolServerState.AVAILABLE, PoolServerState.CLAIMED):
        if row.booted_at is None:
            PoolServer.update(booted_at=utcnow()).where(PoolServer.id == row.id).execute()
        return None
    if row.state != PoolServerState.ASSIGNED or row.sealed_env is None:
        raise NotFound("this pool server has no config to fetch")
    with write_transaction():
        taken = (PoolServer.update(state=PoolServerState.CONFIGURED, sealed_env=None,
                                   configured_at=utcnow(), updated_at=utcnow())
                 .where((PoolServer.id == row.id) & (PoolServer.state == PoolServerState.ASSIGNED))
                 .execute())
    if not taken:
        raise NotFound("this pool server's config was fetched already")
    log.info("warm pool: server %s fetched tenant %s's config", row.id, row.tenant_id)
    return json.loads(box.decrypt(row.sealed_env))


@dataclass
class SweepReport:
    """What ``sweep`` found and removed.

    Attributes:
        orphans: provider ids of pool servers no row accounts for (deleted).
        vanished: row ids whose server is gone (rows deleted).
        failures: provider id → why its deletion failed.
    """

    orphans: list[str] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)


def sweep(provisioner: Provisioner) -> SweepReport:
    """Reconcile the provider's pool servers with the rows (part of the orphan check).

    A pool server without a row (a create whose row was never written, a row deleted by hand)
    is deleted; an ``available`` row whose server is gone is deleted (``top_up`` replaces it).
    Claimed and assigned servers belong to tenants: the tenant sweep
    (``HetznerProvisioner.reconcile``) judges those.

    Returns:
        A ``SweepReport``.
    """
    report = SweepReport()
    if provisioner.pool_snapshot() is None:
        return report
    servers = {info.provider_id: info for info in provisioner.pool_servers()}
    rows = {row.provider_id: row for row in PoolServer.select()}
    for provider_id, info in servers.items():
        if provider_id in rows or info.claimed_by:
            continue
        try:
            provisioner.delete_pool_server(provider_id)
            report.orphans.append(provider_id)
        except ProvisioningError as exc:
            report.failures[provider_id] = str(exc)
    for provider_id, row in rows.items():
        if row.state == PoolServerState.AVAILABLE and provider_id not in servers:
            try:
                provisioner.delete_pool_server(provider_id)  # what is left of it (a local slot)
            except ProvisioningError as exc:
                report.failures[provider_id] = str(exc)
                continue
            PoolServer.delete().where((PoolServer.id == row.id)
                                      & (PoolServer.state == PoolServerState.AVAILABLE)).execute()
            report.vanished.append(row.id)
    if report.orphans or report.vanished:
        log.warning("warm pool sweep: deleted orphan servers %s, rows of vanished servers %s",
                    report.orphans, report.vanished)
    return report

