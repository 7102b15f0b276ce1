"""A tenant's data as one zip: ``hermes tenants export EMAIL`` and ``GET /dashboard/export``.

The agent's data lives on its machine, and the control plane already has one way to get it:
the tenant backups of ``control.services.backups`` (a consistent ``agent.backup`` snapshot,
taken by a local subprocess or over SSH on the VM, stored in the archive store).  So no new
transport: an export of a tenant whose agent runs takes a fresh backup first, exactly as the
nightly run does (it also counts as one); when that fails, or the agent is not running, the
newest nightly backup is used, and for an archived tenant its deprovision archive.  The
archive's checksum is verified, then ``python -m agent.export`` (run, never imported: the
control plane does not import ``agent``) turns it into the zip of documented JSON, and the
files the user sent (``control.services.media``, kept per tenant) are added under ``files/``
with ``files.json``, and the tenant's Jobs API jobs (kept by the control plane) as
``api_jobs.json``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from urllib.parse import unquote

from control.errors import NotFound, ServiceUnavailable
from control.models import Job, Machine, MachineState
from control.providers.archive import ObjectStore
from control.services import backups, jobs, media

log = logging.getLogger(__name__)

EXPORT_TIMEOUT = 600  # seconds for ``agent.export``: a large history is a few hundred MB of JSON


@dataclass(frozen=True)
class Export:
    """An export: the zip's bytes, the backup or archive key it was made from, and a file name."""

    data: bytes
    source: str
    filename: str


def _source_key(settings, store: ObjectStore, tenant, fresh: bool, now: dt.datetime | None) -> str | None:
    """The key to export from: a fresh backup, the newest backup, or the tenant's archive."""
    name = str(tenant.id)
    machine = Machine.get_or_none(Machine.tenant == tenant)
    if fresh and machine is not None and machine.state in (MachineState.READY, MachineState.UNHEALTHY):
        entries, failures = backups.backup_tenants(store, [(name, machine.address)],
                                                   backups.archiver_from_settings(settings), now)
        if entries:
            return entries[0].key
        log.warning("fresh backup for the export of tenant %s failed (%s); using the latest one",
                    name, failures.get(name))
    return backups.latest_tenant_backup(store, name) or tenant.archive_key


def _verified(store: ObjectStore, key: str) -> bytes:
    """The object's bytes, checked against the SHA-256 recorded with it."""
    data = store.get_bytes(key)
    expected = store.metadata(key).get("sha256")
    if expected is None:
        try:
            expected = json.loads(store.get_bytes(key + backups.MANIFEST_SUFFIX)).get("sha256")
        except KeyError:
            expected = None
    if expected is None or hashlib.sha256(data).hexdigest() != expected:
        raise ServiceUnavailable(f"the backup {key} does not match its recorded checksum", code="export_failed")
    return data


def _add_files(zipped: bytes, media_store: ObjectStore, env: str, tenant: str) -> bytes:
    """Return ``zipped`` with the tenant's stored media under ``files/`` and ``files.json``."""
    buffer = io.BytesIO(zipped)
    listing = []
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(media_store.list_keys(f"media/{env}/{tenant}/")):
            message_id, index = key.split("/")[3:5]
            meta = media_store.metadata(key)
            name = unquote(meta.get("name", "")).replace("/", "_").strip(". ") or "file"
            path = f"files/{message_id}/{index}-{name}"
            content = media_store.get_bytes(key)
            archive.writestr(path, content)
            listing.append({"path": path, "name": name, "mime_type": meta.get("content-type", ""),
                            "bytes": len(content), "sha256": hashlib.sha256(content).hexdigest(),
                            "message_id": message_id, "stored_at": meta.get("stored-at", "")})
        archive.writestr("files.json", json.dumps(listing, indent=2, ensure_ascii=False))
    return buffer.getvalue()


def _add_jobs(zipped: bytes, tenant_id: int) -> bytes:
    """Return ``zipped`` with the tenant's Jobs API jobs, oldest first, as ``api_jobs.json``."""
    buffer = io.BytesIO(zipped)
    views = [jobs.job_view(job) for job in Job.select().where(Job.tenant == tenant_id).order_by(Job.id)]
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("api_jobs.json", json.dumps(views, indent=2, ensure_ascii=False))
    return buffer.getvalue()


def export_tenant(settings, tenant, *, fresh: bool = True, now: dt.datetime | None = None) -> Export:
    """Build ``tenant``'s export zip; needs a database connection.

    Args:
        settings: the control plane's ``Settings``.
        tenant: a ``control.models.Tenant``.
        fresh: take a new backup first when its agent runs (the dashboard and the CLI do).

    Raises:
        NotFound: no backup or archive of the tenant exists yet.
        ServiceUnavailable: the backup fails its checksum, or ``agent.export`` refused it.
    """
    store = backups.store_from_settings(settings)
    key = _source_key(settings, store, tenant, fresh, now)
    if key is None:
        raise NotFound("There is no backup of this account's data yet; try again after the agent has "
                       "started.", code="no_backup")
    archive = _verified(store, key)
    done = subprocess.run([sys.executable, "-m", "agent.export", "-", "-"], input=archive,
                          capture_output=True, timeout=EXPORT_TIMEOUT, check=False)
    if done.returncode != 0:
        log.error("agent.export of %s failed: %s", key, done.stderr.decode(errors="replace")[-500:])
        raise ServiceUnavailable("The export could not be built; the team has been told.", code="export_failed")
    data = _add_files(done.stdout, media.store_from_settings(settings), settings.env, str(tenant.id))
    data = _add_jobs(data, tenant.id)
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
    return Export(data, key, f"hermes-export-{tenant.id}-{stamp}.zip")
