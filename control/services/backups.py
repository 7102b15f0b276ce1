"""Backups of the control database and of every tenant's agent data; retention; restores.

Objects (in the archive store, ``store_from_settings``: S3 when ``ARCHIVE_BUCKET`` is set, else
``<data_dir>/archives``):

* ``backups/control/<env>/<UTC timestamp>.sqlite3`` — SQLite's online backup API
  (``sqlite3.Connection.backup``: one consistent state while the app writes,
  https://sqlite.org/backup.html), or ``….dump`` — ``pg_dump --format=custom`` for Postgres;
* ``backups/tenants/<tenant>/<UTC timestamp>.tar.gz`` — the agent's own consistent snapshot
  (``python -m agent.backup snapshot``: SQLite online backup of each store plus ``skills/``), run
  as a local subprocess for ``LocalProvisioner`` agents and over SSH on a VM
  (``SshTarArchiver(live=True)``).  The control plane never imports ``agent``: it runs it.

Each object carries ``sha256`` and ``bytes`` (the control DB in its metadata, every object in
its ``<key>.manifest.json``); restores verify the checksum before touching anything.

Retention (``prune``): per series (the control DB of one env, one tenant) the newest backup of
each of the last ``HERMES_BACKUP_RETENTION_DAYS`` UTC days is kept, and the newest backup of a
series always, so a tenant whose backups start failing keeps its last good one.  Deprovision
archives (``archives/``) are not touched: their retention belongs to the subscription lifecycle.

``restore_tenant`` is the ONE restore path for tenant data: nightly backups and deprovision
archives alike (``agent.backup restore`` reads both formats), onto a local data dir or a VM.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import re
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from control.errors import HermesError, ProvisioningError
from control.models import Machine, MachineState
from control.providers.archive import (
    LocalObjectStore,
    ObjectStore,
    S3ObjectStore,
    archive_stream,
)
from control.providers.hetzner.archive import (
    DataArchiver,
    SshTarArchiver,
    feed_command,
    stream_command,
)
from control.providers.hetzner.host_keys import HostKeyStore, known_hosts_dir

log = logging.getLogger(__name__)

PREFIX = "backups/"
MANIFEST_SUFFIX = ".manifest.json"
_STAMP = "%Y%m%dT%H%M%SZ"
_KEY_STAMP = re.compile(r"/(\d{8}T\d{6}Z)\.[^/]+$")

#: A restore target: ``(archive bytes, force) -> report line``.
RestoreTarget = Callable[[bytes, bool], str]


class BackupError(HermesError):
    """A backup or restore failed, or was refused (e.g. the target database is not empty)."""


@dataclass(frozen=True)
class BackupEntry:
    """One stored backup.

    Attributes:
        key: object key.
        bytes: size, bytes (``-1`` when its manifest is missing).
        created_at: UTC time from the key's timestamp.
        sha256: hex SHA-256 (``""`` when its manifest is missing).
    """

    key: str
    bytes: int
    created_at: dt.datetime
    sha256: str = ""


@dataclass
class BackupRun:
    """What one ``run`` did: the control DB backup, tenant backups, failures and pruned keys."""

    control: BackupEntry | None = None
    tenants: list[BackupEntry] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    pruned: list[str] = field(default_factory=list)


def _stamp(now: dt.datetime | None) -> str:
    return (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).strftime(_STAMP)


def control_key(env: str, ext: str, now: dt.datetime | None = None) -> str:
    """Return ``backups/control/<env>/<UTC timestamp>.<ext>``."""
    return f"{PREFIX}control/{env}/{_stamp(now)}.{ext}"


def tenant_key(tenant: str, now: dt.datetime | None = None) -> str:
    """Return ``backups/tenants/<tenant>/<UTC timestamp>.tar.gz``."""
    return f"{PREFIX}tenants/{tenant}/{_stamp(now)}.tar.gz"


def store_from_settings(settings) -> ObjectStore:
    """The archive store: the ``ARCHIVE_*`` S3 bucket when set, else ``<data_dir>/archives``
    (the same store ``HetznerProvisioner`` archives to, so deprovision archives restore too)."""
    if settings.archive_bucket:
        return S3ObjectStore(settings.archive_bucket, endpoint_url=settings.archive_s3_endpoint or None,
                             access_key=settings.archive_access_key or None,
                             secret_key=settings.archive_secret_key or None,
                             region=settings.archive_region or None)
    return LocalObjectStore(Path(settings.data_dir) / "archives")


def _sqlite_path(database_url: str) -> Path | None:
    return Path(database_url[len("sqlite:///"):]) if database_url.startswith("sqlite:///") else None


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BackupError(f"{what} failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")


def backup_control_db(store: ObjectStore, database_url: str, env: str,
                      now: dt.datetime | None = None) -> BackupEntry:
    """Back up the control database to ``backups/control/<env>/<timestamp>.sqlite3|.dump``.

    Args:
        database_url: ``sqlite:////abs/path.db`` (online backup API) or ``postgresql://…``
            (``pg_dump --format=custom``; ``pg_dump`` must be on ``PATH``).

    Raises:
        BackupError: the database cannot be read or ``pg_dump`` failed.
        ProvisioningError: the upload failed.
    """
    source = _sqlite_path(database_url)
    with tempfile.TemporaryDirectory(prefix="hermes-backup-") as tmp:
        if source is not None:
            dump, kind = Path(tmp) / "control.sqlite3", "sqlite"
            if not source.is_file():
                raise BackupError(f"no control database at {source}")
            try:
                with closing(sqlite3.connect(source, timeout=30)) as src, \
                        closing(sqlite3.connect(dump)) as dst:
                    src.backup(dst)
            except sqlite3.Error as exc:
                raise BackupError(f"online backup of {source} failed: {exc}") from exc
        else:
            dump, kind = Path(tmp) / "control.dump", "postgresql"
            _run(["pg_dump", "--format=custom", "--no-owner", f"--file={dump}",
                  f"--dbname={database_url}"], "pg_dump")
        digest, size = _file_digest(dump), dump.stat().st_size
        key = control_key(env, dump.suffix.lstrip("."), now)
        with open(dump, "rb") as stream:
            archive_stream(store, stream, key, {"kind": "control-db", "database": kind, "env": env,
                                                "sha256": digest, "bytes": str(size)})
    log.info("control database backed up to %s (%d bytes)", key, size)
    return BackupEntry(key, size, _created_at(key), digest)


def _fetch_verified(store: ObjectStore, key: str) -> bytes:
    """Return the object's bytes after checking them against its recorded SHA-256."""
    try:
        data = store.get_bytes(key)
        expected = store.metadata(key).get("sha256")
    except KeyError:
        raise BackupError(f"no backup {key}") from None
    if expected is None:
        try:
            expected = _manifest(store, key).get("sha256")
        except KeyError:
            expected = None
    if expected is None:
        raise BackupError(f"{key} has no recorded SHA-256 (incomplete upload?); not restoring it")
    if hashlib.sha256(data).hexdigest() != expected:
        raise BackupError(f"{key} does not match its recorded SHA-256; not restoring it")
    return data


def restore_control_db(store: ObjectStore, key: str, database_url: str) -> None:
    """Restore the control DB backup ``key`` into a FRESH database at ``database_url``.

    SQLite: the file must not exist (or be empty); it is written atomically.  Postgres: the
    database must exist and hold no tables; ``pg_restore --single-transaction --exit-on-error``
    loads it (all or nothing).

    Raises:
        BackupError: unknown key, checksum mismatch, a non-empty target, a backup of the other
            database kind, or ``pg_restore`` failed.
    """
    data = _fetch_verified(store, key)
    target = _sqlite_path(database_url)
    if (target is not None) != key.endswith(".sqlite3"):
        raise BackupError(f"{key} is a backup of another database kind than {database_url.split(':')[0]}")
    if target is not None:
        if target.exists() and target.stat().st_size > 0:
            raise BackupError(f"{target} exists; restore into a fresh database file")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".restore-", delete=False) as tmp:
            tmp.write(data)
        with closing(sqlite3.connect(tmp.name)) as check:
            result = check.execute("PRAGMA quick_check").fetchall()
        if result != [("ok",)]:
            Path(tmp.name).unlink()
            raise BackupError(f"{key} failed PRAGMA quick_check: {result[:3]}")
        Path(tmp.name).replace(target)
        return
    from playhouse.db_url import connect

    database = connect(database_url)
    try:
        tables = database.get_tables()
    finally:
        database.close()
    if tables:
        raise BackupError(f"the target database holds {len(tables)} tables; restore into a fresh one")
    with tempfile.NamedTemporaryFile(suffix=".dump") as tmp:
        tmp.write(data)
        tmp.flush()
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
              f"--dbname={database_url}", tmp.name], "pg_restore")


@dataclass
class LocalSnapshotArchiver:
    """A ``DataArchiver`` for ``LocalProvisioner`` agents: runs ``python -m agent.backup snapshot``
    on ``<agents_dir>/<tenant>`` and streams its stdout into the store.

    Attributes:
        agents_dir: parent of the per-tenant data dirs.
        python: the interpreter with the ``agent`` package.
    """

    agents_dir: str | Path
    python: str = sys.executable

    def __call__(self, tenant, address, store, key, metadata):
        data = Path(self.agents_dir) / tenant
        argv = [self.python, "-m", "agent.backup", "snapshot", "--data-dir", str(data), "-"]
        return stream_command(argv, store, key, {**metadata, "source": f"local:{data}"},
                              what=f"snapshot of tenant {tenant}")


@dataclass
class LocalRestore:
    """A ``RestoreTarget``: ``python -m agent.backup restore`` into a local data dir."""

    data_dir: str | Path
    python: str = sys.executable

    def __call__(self, archive: bytes, force: bool) -> str:
        argv = [self.python, "-m", "agent.backup", "restore", "--data-dir", str(self.data_dir),
                *(["--force"] if force else []), "-"]
        return feed_command(argv, archive, what=f"restore into {self.data_dir}")


def archiver_from_settings(settings) -> DataArchiver:
    """How tenant snapshots are taken: locally, or over SSH on Hetzner VMs (units keep running)."""
    if settings.provisioner == "hetzner":
        return SshTarArchiver(key_path=settings.hetzner_ssh_key_path or None, live=True,
                              host_keys=HostKeyStore(known_hosts_dir(settings)))
    return LocalSnapshotArchiver(settings.agents_dir)


def target_from_settings(settings, tenant: str, address: str | None = None) -> RestoreTarget:
    """Where ``tenant``'s data is restored: its local data dir, or its VM at ``address``."""
    if settings.provisioner == "hetzner":
        archiver = SshTarArchiver(key_path=settings.hetzner_ssh_key_path or None,
                                  host_keys=HostKeyStore(known_hosts_dir(settings)))
        return functools.partial(archiver.restore, tenant, address)
    return LocalRestore(Path(settings.agents_dir) / tenant)


def active_tenants() -> list[tuple[str, str | None]]:
    """Return ``(tenant key, address)`` of every machine whose agent runs (ready or unhealthy);
    needs a database connection."""
    machines = Machine.select().where(Machine.state.in_([MachineState.READY, MachineState.UNHEALTHY]))
    return [(str(m.tenant_id), m.address) for m in machines.order_by(Machine.tenant)]


def backup_tenants(store: ObjectStore, tenants: Iterable[tuple[str, str | None]],
                   archiver: DataArchiver, now: dt.datetime | None = None,
                   ) -> tuple[list[BackupEntry], dict[str, str]]:
    """Back up each ``(tenant, address)``; one tenant's failure does not stop the others.

    Returns:
        ``(entries, failures)`` with failures as ``{tenant: error message}``.
    """
    entries, failures = [], {}
    for tenant, address in tenants:
        key = tenant_key(tenant, now)
        try:
            result = archiver(tenant, address, store, key, {"kind": "tenant", "tenant": tenant})
        except ProvisioningError as exc:
            log.error("backup of tenant %s failed: %s", tenant, exc)
            failures[tenant] = str(exc)
            continue
        entries.append(BackupEntry(result.key, result.bytes, _created_at(key), result.sha256))
    return entries, failures


def restore_tenant(store: ObjectStore, tenant: str, key: str, target: RestoreTarget,
                   force: bool = False) -> str:
    """Restore ``tenant``'s data from ``key`` through ``target`` — the one tenant restore path.

    ``key`` is a nightly backup (``backups/tenants/<tenant>/…``) or a deprovision archive
    (``archives/<env>/<tenant>/…``); its SHA-256 is checked first.  Run with the agent stopped
    (``SshTarArchiver.restore`` stops and starts the VM's units itself).

    Args:
        target: a ``RestoreTarget`` (``target_from_settings``, ``LocalRestore``).
        force: replace the stores of a non-empty data dir (a freshly booted agent's).

    Returns:
        The restore's report line (JSON from ``agent.backup``).

    Raises:
        BackupError: the key is not this tenant's, is missing, or fails its checksum.
        ProvisioningError: the restore itself failed or was refused (non-empty data dir).
    """
    if tenant not in key.split("/")[:-1]:
        raise BackupError(f"{key} is not a backup of tenant {tenant}")
    return target(_fetch_verified(store, key), force)


def latest_tenant_backup(store: ObjectStore, tenant: str) -> str | None:
    """Return the key of ``tenant``'s newest nightly backup, or None."""
    keys = [e.key for e in list_backups(store, f"{PREFIX}tenants/{tenant}/", sizes=False)]
    return keys[-1] if keys else None


def _created_at(key: str) -> dt.datetime:
    match = _KEY_STAMP.search(key)
    if not match:
        raise ValueError(f"{key} has no timestamp")
    return dt.datetime.strptime(match.group(1), _STAMP).replace(tzinfo=dt.UTC)


def _manifest(store: ObjectStore, key: str) -> dict:
    import json

    return json.loads(store.get_bytes(key + MANIFEST_SUFFIX))


def list_backups(store: ObjectStore, prefix: str = PREFIX, sizes: bool = True) -> list[BackupEntry]:
    """Return the backups (or, with ``prefix="archives/"``, the archives) under ``prefix``,
    oldest first; ``sizes`` reads each manifest for size and checksum (one GET each)."""
    entries = []
    for key in store.list_keys(prefix):
        if key.endswith(MANIFEST_SUFFIX) or not _KEY_STAMP.search(key):
            continue
        size, digest = -1, ""
        if sizes:
            try:
                manifest = _manifest(store, key)
                size, digest = manifest["bytes"], manifest["sha256"]
            except KeyError:
                pass
        entries.append(BackupEntry(key, size, _created_at(key), digest))
    return sorted(entries, key=lambda e: (e.key.rsplit("/", 1)[0], e.created_at))


def prune(store: ObjectStore, retention_days: int, now: dt.datetime | None = None) -> list[str]:
    """Delete backups outside the retention (see the module docstring); return deleted keys.

    Args:
        retention_days: UTC days kept, today included (>= 1).
    """
    if retention_days < 1:
        raise BackupError(f"retention must keep at least 1 day, not {retention_days}")
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    first_kept = today - dt.timedelta(days=retention_days - 1)
    series: dict[str, list[BackupEntry]] = {}
    for entry in list_backups(store, PREFIX, sizes=False):
        series.setdefault(entry.key.rsplit("/", 1)[0], []).append(entry)
    deleted = []
    for entries in series.values():
        kept_days = set()
        for position, entry in enumerate(sorted(entries, key=lambda e: e.created_at, reverse=True)):
            day = entry.created_at.date()
            if position == 0 or (day >= first_kept and day not in kept_days):
                kept_days.add(day)
                continue
            store.delete(entry.key)
            store.delete(entry.key + MANIFEST_SUFFIX)
            deleted.append(entry.key)
    return sorted(deleted)


def run(store: ObjectStore, *, database_url: str, env: str, archiver: DataArchiver,
        tenants: Iterable[tuple[str, str | None]], retention_days: int,
        now: dt.datetime | None = None) -> BackupRun:
    """One backup run: the control DB, every tenant in ``tenants``, then ``prune``.

    The control DB backup failing raises (nothing else is worth doing without it); tenant
    failures are collected in ``BackupRun.failures``.
    """
    report = BackupRun()
    report.control = backup_control_db(store, database_url, env, now)
    report.tenants, report.failures = backup_tenants(store, tenants, archiver, now)
    report.pruned = prune(store, retention_days, now)
    return report


def run_from_settings(settings, now: dt.datetime | None = None) -> BackupRun:
    """``run`` with everything taken from ``settings``; needs a database connection."""
    return run(store_from_settings(settings), database_url=settings.database_url, env=settings.env,
               archiver=archiver_from_settings(settings), tenants=active_tenants(),
               retention_days=settings.backup_retention_days, now=now)

