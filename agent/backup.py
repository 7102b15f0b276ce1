"""Consistent snapshots of an agent's data dir, and the one restore of them.

``python -m agent.backup snapshot [--data-dir DIR] OUT`` writes a gzipped tar (``OUT`` or ``-``
for stdout) holding:

* every SQLite store of the data dir (``history.db``, ``memory.db``, ``cron.db``, ``usage.db``,
  ``inbox.db``, and any later ``*.db``), each copied with SQLite's online backup API, so the copy
  is one committed state even while the agent writes (https://sqlite.org/backup.html) — a raw
  copy of a live WAL database can miss committed pages or tear between the file and its WAL;
* the ``skills/`` tree;
* ``mcp_servers.json``, the MCP servers the control plane pushed (``agent.mcp_client.config``),
  so a restored agent has its connected services' tools before the control plane's next push
  (issue 19, finding 9); restored with mode 0600, as the agent writes it (it holds the MCP proxy
  token);
* ``hermes-snapshot.json``: format version, creation time, each store's size and SHA-256, and
  the same for each configuration file (``files``).

The task queue (``huey.db``) and the embedded bus (``bus.db``) are transport, not user data: an
envelope in flight is redelivered by the bus to whichever agent runs next, so neither is kept.

``python -m agent.backup restore [--data-dir DIR] [--force] IN`` (``IN`` or ``-`` for stdin)
restores such a snapshot, or a deprovision archive (``control.providers.archive``: a tar of the
stopped agent's whole data dir), into an EMPTY data dir; ``--force`` first removes the stores and
skills a non-empty one holds.  Run it with the agent stopped.  Both formats go through the same
selection (stores, a raw archive's ``-wal`` files, skills, ``CONFIG_FILES``), path checks and
``PRAGMA quick_check`` of every restored store.  Exit status 0 on success, 1 on a refused or bad archive.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import io
import json
import shutil
import sqlite3
import sys
import tarfile
import tempfile
import zlib
from contextlib import closing
from dataclasses import fields
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from agent.config import AgentConfig
from agent.mcp_client.config import SERVERS_FILE

MANIFEST = "hermes-snapshot.json"
FORMAT = 1
SKILLS = "skills"
#: Files of the data dir that are transport, not the user's data (see the module docstring).
TRANSIENT = frozenset({"huey.db", "bus.db"})
#: Top-level configuration files kept with the stores; they may hold credentials (mode 0600).
CONFIG_FILES = frozenset({SERVERS_FILE})
_SIDECARS = ("-wal", "-shm", "-journal")
_CHUNK = 1024 * 1024
DEFAULT_DATA_DIR = next(f.default for f in fields(AgentConfig) if f.name == "data_dir")


class BackupError(Exception):
    """A snapshot could not be made or an archive cannot be restored (message says why)."""


def store_files(data_dir: Path) -> list[Path]:
    """Return the data dir's SQLite stores (top-level ``*.db`` not in ``TRANSIENT``), sorted."""
    return sorted(p for p in data_dir.glob("*.db") if p.is_file() and p.name not in TRANSIENT)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def snapshot(data_dir: str | Path, out: BinaryIO) -> dict:
    """Write a consistent ``.tar.gz`` snapshot of ``data_dir`` to ``out``.

    Args:
        data_dir: the agent's data dir (the agent may be running).
        out: a binary stream; it is written, not closed.

    Returns:
        The manifest stored in the archive: ``{"format", "created_at", "stores": {name:
        {"bytes", "sha256"}}, "skills": [relative paths], "files": {name: {"bytes", "sha256"}}}``
        (``files``: the ``CONFIG_FILES`` present).

    Raises:
        BackupError: ``data_dir`` is not a directory or a store cannot be read.
    """
    source = Path(data_dir)
    if not source.is_dir():
        raise BackupError(f"no agent data dir at {source}")
    manifest: dict[str, Any] = {"format": FORMAT, "created_at": dt.datetime.now(dt.UTC).isoformat(),
                "stores": {}, "skills": [], "files": {}}
    with tempfile.TemporaryDirectory(prefix="hermes-snapshot-") as tmp, \
            tarfile.open(fileobj=out, mode="w|gz") as tar:
        for store in store_files(source):
            copy = Path(tmp) / store.name
            try:
                # timeout: the agent may hold the write lock for a moment; the backup waits.
                with closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)) as src, \
                        closing(sqlite3.connect(copy)) as dst:
                    src.backup(dst)
            except sqlite3.Error as exc:
                raise BackupError(f"cannot back up {store}: {exc}") from exc
            manifest["stores"][store.name] = {"bytes": copy.stat().st_size, "sha256": _sha256(copy)}
            tar.add(copy, arcname=store.name)
        skills = source / SKILLS
        if skills.is_dir():
            for path in sorted(skills.rglob("*")):
                if path.is_file() and not path.is_symlink():
                    name = path.relative_to(source).as_posix()
                    manifest["skills"].append(name)
                    tar.add(path, arcname=name)
        for name in sorted(CONFIG_FILES):
            path = source / name
            if path.is_file() and not path.is_symlink():
                # Read once, so the recorded checksum is of exactly the bytes archived (the agent
                # replaces the file atomically when a new configuration arrives).
                content = path.read_bytes()
                manifest["files"][name] = {"bytes": len(content),
                                           "sha256": hashlib.sha256(content).hexdigest()}
                info = tarfile.TarInfo(name)
                info.size, info.mode = len(content), 0o600
                info.mtime = int(dt.datetime.now(dt.UTC).timestamp())
                tar.addfile(info, io.BytesIO(content))
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mtime = len(body), int(dt.datetime.now(dt.UTC).timestamp())
        tar.addfile(info, io.BytesIO(body))
    return manifest


def _member_name(member: tarfile.TarInfo) -> str | None:
    """The member's normalised relative name, or None for the archive root (``.``).

    Raises BackupError for absolute names and names that climb out of the archive.
    """
    path = PurePosixPath(member.name)
    if path.is_absolute() or ".." in path.parts:
        raise BackupError(f"archive member {member.name!r} escapes the data dir")
    parts = [p for p in path.parts if p != "."]
    return "/".join(parts) or None


def _wanted(name: str, raw: bool) -> bool:
    """Is ``name`` restored?  Stores, skills and ``CONFIG_FILES``; a raw archive's WAL files too
    (taken with the agent stopped after a crash, a WAL may still hold committed transactions)."""
    if name.startswith(SKILLS + "/") or name in CONFIG_FILES:
        return True
    if "/" in name:
        return False
    if name.endswith(".db"):
        return name not in TRANSIENT
    return raw and name.endswith(".db-wal") and name[: -len("-wal")] not in TRANSIENT


def clear(data_dir: Path) -> None:
    """Remove what a restore replaces: every store with its sidecar files, and ``skills/``."""
    for store in store_files(data_dir):
        for suffix in ("", *_SIDECARS):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
    shutil.rmtree(data_dir / SKILLS, ignore_errors=True)


def restore(archive: IO[bytes], data_dir: str | Path, *, force: bool = False) -> dict:
    """Restore a snapshot or a deprovision archive into ``data_dir``; run with the agent stopped.

    Args:
        archive: a seekable binary stream of the ``.tar.gz``.
        data_dir: the target data dir; created when missing.
        force: restore into a non-empty ``data_dir`` (its stores and skills are removed first;
            other files such as ``machine.json`` stay).

    Returns:
        ``{"format": "snapshot" | "archive", "stores": [names], "skills": count, "files":
        [configuration files restored]}``.

    Raises:
        BackupError: ``data_dir`` is not empty and not ``force``; the archive is not a gzipped
            tar, has unsafe members, a store fails its checksum or ``PRAGMA quick_check``.
    """
    target = Path(data_dir)
    if target.exists() and any(target.iterdir()) and not force:
        raise BackupError(f"{target} is not empty; restore into an empty data dir, or pass "
                          f"--force to replace its stores and skills")
    try:
        with tarfile.open(fileobj=archive, mode="r:gz") as tar:
            stores, files, manifest = _extract(tar, target)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise BackupError(f"not a readable gzipped tar archive: {exc}") from exc
    skills = target / SKILLS
    count = sum(1 for p in skills.rglob("*") if p.is_file()) if skills.is_dir() else 0
    return {"format": "archive" if manifest is None else "snapshot", "stores": stores, "skills": count,
            "files": files}


def _extract(tar: tarfile.TarFile, target: Path) -> tuple[list[str], list[str], dict | None]:
    """Stage the wanted members next to ``target``, check every store and file, then move them in.

    Returns the restored store names, configuration file names and the snapshot manifest (None
    for a raw archive).
    """
    with tempfile.TemporaryDirectory(prefix=".restore-", dir=_parent(target)) as tmp:
        staging = Path(tmp)
        members = [(name, m) for m in tar.getmembers() if (name := _member_name(m))]
        names = {name for name, _ in members}
        manifest = json.load(_open_member(tar, dict(members)[MANIFEST])) if MANIFEST in names else None
        if manifest is not None and manifest.get("format") != FORMAT:
            raise BackupError(f"snapshot format {manifest.get('format')!r} is not {FORMAT}")
        for name, member in members:
            if not _wanted(name, raw=manifest is None):
                continue
            if not (member.isfile() or member.isdir()):
                raise BackupError(f"archive member {name!r} is neither a file nor a directory")
            path = staging / name
            if member.isdir():
                path.mkdir(parents=True, exist_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with _open_member(tar, member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
        stores = sorted(p.name for p in staging.glob("*.db"))
        for name in stores:
            _check_store(staging / name, (manifest or {}).get("stores", {}).get(name))
        if manifest is not None and sorted(manifest["stores"]) != stores:
            raise BackupError(f"snapshot lists stores {sorted(manifest['stores'])} but holds {stores}")
        files = sorted(name for name in CONFIG_FILES if (staging / name).is_file())
        if manifest is not None and sorted(manifest.get("files", {})) != files:
            raise BackupError(f"snapshot lists files {sorted(manifest['files'])} but holds {files}")
        for name in files:
            _check_file(staging / name, (manifest or {}).get("files", {}).get(name))
        target.mkdir(parents=True, exist_ok=True)
        clear(target)
        for path in sorted(staging.iterdir()):
            shutil.move(str(path), target / path.name)
    return stores, files, manifest


def _parent(target: Path) -> Path:
    # Staging next to the target keeps the final moves on one file system (renames, not copies).
    parent = target.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _check_file(path: Path, expected: dict | None) -> None:
    """Raise BackupError unless ``path`` matches its manifest entry; make it 0600 (credentials)."""
    if expected is not None and _sha256(path) != expected["sha256"]:
        raise BackupError(f"{path.name} does not match the snapshot's SHA-256")
    path.chmod(0o600)


def _check_store(path: Path, expected: dict | None) -> None:
    """Raise BackupError unless ``path`` matches its manifest entry and passes ``quick_check``.

    Opening the file also replays a raw archive's ``-wal`` into it, so the store is whole
    before the agent starts; ``wal_checkpoint(TRUNCATE)`` then empties the WAL.
    """
    if expected is not None and _sha256(path) != expected["sha256"]:
        raise BackupError(f"{path.name} does not match the snapshot's SHA-256")
    try:
        with closing(sqlite3.connect(path)) as db:
            result = db.execute("PRAGMA quick_check").fetchall()
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.Error as exc:
        raise BackupError(f"{path.name} is not a readable SQLite database: {exc}") from exc
    if result != [("ok",)]:
        raise BackupError(f"{path.name} failed PRAGMA quick_check: {result[:3]}")


def _open_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> IO[bytes]:
    src = tar.extractfile(member)
    if src is None:  # checked by the callers: only regular files are read
        raise BackupError(f"archive member {member.name!r} is not a regular file")
    return src


def _spool(stream: BinaryIO) -> IO[bytes]:
    # stdin is not seekable; tarfile's random access needs a file (memory up to 64 MiB, then disk).
    spool = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 - returned open
    shutil.copyfileobj(stream, spool, _CHUNK)
    spool.seek(0)
    return spool


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m agent.backup", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("snapshot", help="write a consistent snapshot of the data dir")
    make.add_argument("out", help="output .tar.gz path, or - for stdout")
    back = commands.add_parser("restore", help="restore a snapshot or deprovision archive")
    back.add_argument("archive", help="input .tar.gz path, or - for stdin")
    back.add_argument("--force", action="store_true",
                      help="restore into a non-empty data dir, replacing its stores and skills")
    for sub in (make, back):
        sub.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="the agent's data dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "snapshot":
            if args.out == "-":
                snapshot(args.data_dir, sys.stdout.buffer)
                sys.stdout.buffer.flush()
            else:
                with open(args.out, "wb") as out:
                    snapshot(args.data_dir, out)
            return 0
        if args.archive == "-":
            report = restore(_spool(sys.stdin.buffer), args.data_dir, force=args.force)
        else:
            with open(args.archive, "rb") as src:
                report = restore(src, args.data_dir, force=args.force)
    except (BackupError, OSError) as exc:
        print(f"agent.backup: {exc}", file=sys.stderr)  # noqa: T201 - a command-line tool
        return 1
    print(json.dumps(report, sort_keys=True), file=sys.stderr)  # noqa: T201 - its report
    return 0


if __name__ == "__main__":
    sys.exit(main())
