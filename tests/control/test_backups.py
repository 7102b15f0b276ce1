"""Backups: control DB round trips (SQLite and Postgres), the agent's snapshot and restore rules,
deprovision archives through the same restore, SSH commands run locally, and retention."""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
import subprocess
import sys
import tarfile
from contextlib import closing
from pathlib import Path

import psycopg2
import pytest

from control.errors import ProvisioningError
from control.providers.archive import LocalObjectStore, archive_directory, archive_key
from control.providers.hetzner.archive import SshTarArchiver
from control.services import backups

REPO = Path(__file__).resolve().parents[2]
POSTGRES_ADMIN = "postgres://postgres@127.0.0.1:5432/test"


@pytest.fixture
def store(tmp_path):
    return LocalObjectStore(tmp_path / "objects")


def make_agent_data(data: Path) -> Path:
    """An agent data dir with a skill, a task queue and the local provisioner's machine file."""
    (data / "skills" / "brew-tea").mkdir(parents=True)
    (data / "skills" / "brew-tea" / "SKILL.md").write_text("---\nname: brew-tea\n---\nsteep 3 minutes\n")
    (data / "huey.db").write_bytes(b"queue, not user data")
    (data / "machine.json").write_text("{}")
    return data


def open_wal_store(path: Path, fact: str) -> sqlite3.Connection:
    """Write ``fact`` to a WAL database and keep the connection open (no checkpoint yet)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE IF NOT EXISTS facts(text TEXT)")
    db.execute("INSERT INTO facts VALUES (?)", (fact,))
    return db


def facts(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        return [row[0] for row in db.execute("SELECT text FROM facts")]


def agent_backup(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.backup", *args], cwd=REPO, input=stdin,
                          capture_output=True, check=False)


def test_live_snapshot_restores_committed_rows_skills_and_no_queue(tmp_path, store):
    data = make_agent_data(tmp_path / "agents" / "7")
    live = open_wal_store(data / "memory.db", "likes green tea")  # the agent is still running
    assert (data / "memory.db-wal").stat().st_size > 0
    [entry], failures = backups.backup_tenants(store, [("7", None)],
                                               backups.LocalSnapshotArchiver(tmp_path / "agents"))
    live.close()
    assert failures == {} and entry.key.startswith("backups/tenants/7/")

    target = tmp_path / "fresh" / "7"
    report = backups.restore_tenant(store, "7", entry.key, backups.LocalRestore(target))

    assert '"format": "snapshot"' in report
    assert facts(target / "memory.db") == ["likes green tea"]
    assert (target / "skills/brew-tea/SKILL.md").read_text().endswith("steep 3 minutes\n")
    assert sorted(p.name for p in target.iterdir()) == ["memory.db", "skills"]


def test_restore_refuses_a_non_empty_data_dir_unless_forced(tmp_path):
    data = make_agent_data(tmp_path / "data")
    open_wal_store(data / "history.db", "the backed-up turn").close()
    snapshot = agent_backup("snapshot", "--data-dir", str(data), "-").stdout
    target = tmp_path / "target"
    target.mkdir()
    (target / "machine.json").write_text('{"tenant": "7"}')
    open_wal_store(target / "history.db", "a fresh agent's turn").close()

    refused = agent_backup("restore", "--data-dir", str(target), "-", stdin=snapshot)
    assert refused.returncode == 1 and b"not empty" in refused.stderr
    assert facts(target / "history.db") == ["a fresh agent's turn"]

    forced = agent_backup("restore", "--data-dir", str(target), "--force", "-", stdin=snapshot)
    assert forced.returncode == 0, forced.stderr
    assert facts(target / "history.db") == ["the backed-up turn"]
    assert (target / "machine.json").read_text() == '{"tenant": "7"}'


def test_a_deprovision_archive_restores_through_the_same_path(tmp_path, store):
    data = make_agent_data(tmp_path / "agents" / "7")
    crashed = open_wal_store(data / "cron.db", "daily digest at 8")
    # A killed agent leaves its WAL behind: copy the files as they are on disk at that moment.
    stopped = tmp_path / "stopped"
    subprocess.run(["cp", "-a", str(data), str(stopped)], check=True)
    crashed.close()
    assert (stopped / "cron.db-wal").exists()
    key = archive_key("prod", "7")
    archive_directory(store, stopped, key, {"tenant": "7"})

    target = tmp_path / "fresh"
    report = backups.restore_tenant(store, "7", key, backups.LocalRestore(target))

    assert '"format": "archive"' in report
    assert facts(target / "cron.db") == ["daily digest at 8"]
    assert not (target / "huey.db").exists() and not (target / "machine.json").exists()
    assert (target / "skills/brew-tea/SKILL.md").exists()


def test_restore_checks_the_owner_and_the_checksum(tmp_path, store):
    data = make_agent_data(tmp_path / "agents" / "7")
    open_wal_store(data / "memory.db", "x").close()
    [entry], _ = backups.backup_tenants(store, [("7", None)],
                                        backups.LocalSnapshotArchiver(tmp_path / "agents"))
    with pytest.raises(backups.BackupError, match="not a backup of tenant 8"):
        backups.restore_tenant(store, "8", entry.key, backups.LocalRestore(tmp_path / "t8"))
    store.put_bytes(entry.key, b"tampered", store.metadata(entry.key))
    with pytest.raises(backups.BackupError, match="SHA-256"):
        backups.restore_tenant(store, "7", entry.key, backups.LocalRestore(tmp_path / "t7"))
    assert not (tmp_path / "t7").exists()


def test_restore_rejects_members_that_escape_the_data_dir(tmp_path):
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w:gz") as tar:
        evil = tarfile.TarInfo("../outside.db")
        tar.addfile(evil, io.BytesIO(b""))
    result = agent_backup("restore", "--data-dir", str(tmp_path / "t"), "-", stdin=blob.getvalue())
    assert result.returncode == 1 and b"escapes" in result.stderr
    assert not (tmp_path / "outside.db").exists()


def test_vm_snapshot_and_restore_commands_run_the_agents_backup(tmp_path, store, fake_ssh):
    data = make_agent_data(tmp_path / "vm" / "var-lib-hermes")
    open_wal_store(data / "usage.db", "42 tokens").close()
    vm = SshTarArchiver(ssh_binary=fake_ssh, data_dir=str(data), live=True, stop_units=(),
                        agent_python=sys.executable, agent_user=None)
    assert "agent.backup snapshot --data-dir" in vm.remote_command()
    assert SshTarArchiver().restore_command(force=True) == (
        "systemctl stop hermes-agent.service hermes-huey.service && { runuser -u hermes -- "
        "/opt/hermes/venv/bin/python -m agent.backup restore --force --data-dir /var/lib/hermes -; "
        "code=$?; systemctl start hermes-agent.service hermes-huey.service; exit $code; }")

    [entry], failures = backups.backup_tenants(store, [("7", "10.0.1.5")], vm)
    assert failures == {}
    target = tmp_path / "new-vm"
    restorer = SshTarArchiver(ssh_binary=fake_ssh, data_dir=str(target), stop_units=(),
                              agent_python=sys.executable, agent_user=None)
    backups.restore_tenant(store, "7", entry.key,
                           lambda archive, force: restorer.restore("7", "10.0.1.6", archive, force))
    assert facts(target / "usage.db") == ["42 tokens"]

    with pytest.raises(ProvisioningError, match="not empty"):
        restorer.restore("7", "10.0.1.6", store.get_bytes(entry.key))


def test_retention_keeps_each_days_newest_within_the_window_and_each_series_newest(store):
    now = dt.datetime(2026, 5, 20, 3, 0, tzinfo=dt.UTC)

    def put(key):
        store.put_bytes(key, b"x")
        store.put_bytes(key + ".manifest.json", b"{}")

    kept = [backups.control_key("prod", "sqlite3", now - dt.timedelta(days=d)) for d in range(3)]
    same_day_older = backups.control_key("prod", "sqlite3", now - dt.timedelta(hours=2))
    too_old = backups.control_key("prod", "sqlite3", now - dt.timedelta(days=3))
    last_of_a_failing_tenant = backups.tenant_key("9", now - dt.timedelta(days=30))
    older_of_that_tenant = backups.tenant_key("9", now - dt.timedelta(days=31))
    archive = archive_key("prod", "9", now - dt.timedelta(days=90))
    for key in [*kept, same_day_older, too_old, last_of_a_failing_tenant, older_of_that_tenant,
                archive]:
        put(key)

    deleted = backups.prune(store, retention_days=3, now=now)

    assert deleted == sorted([same_day_older, too_old, older_of_that_tenant])
    remaining = [e.key for e in backups.list_backups(store)]
    assert sorted(remaining) == sorted([*kept, last_of_a_failing_tenant])
    assert store.list_keys("archives/") == [archive, archive + ".manifest.json"]
    assert not store.list_keys(too_old)


def _create_database() -> str:
    name = f"hermes_restore_{dt.datetime.now().strftime('%H%M%S%f')}"
    conn = psycopg2.connect(POSTGRES_ADMIN, connect_timeout=3)
    conn.autocommit = True
    conn.cursor().execute(f'CREATE DATABASE "{name}"')
    conn.close()
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


def _drop_database(url: str) -> None:
    conn = psycopg2.connect(POSTGRES_ADMIN)
    conn.autocommit = True
    conn.cursor().execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    conn.close()


@pytest.fixture
def fresh_database(tmp_path, db_backend):
    """An empty database of the test's backend (Postgres: created here, dropped after)."""
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'control.db'}"
        return
    url = _create_database()
    yield url
    _drop_database(url)


def test_control_database_restores_into_a_fresh_database(runtime, settings, fresh_database, store):
    from control.db import connect_database
    from control.models import Machine, Tenant

    with runtime.db.connection_context():
        tenant = Tenant.create(email="ada@example.com", plan="light", status="active")
        Machine.create(tenant=tenant, plan="light", state="ready", address="10.0.1.5")
    entry = backups.backup_control_db(store, settings.database_url, "test")
    kind = "sqlite3" if settings.database_url.startswith("sqlite") else "dump"
    assert entry.key.startswith("backups/control/test/") and entry.key.endswith(kind)
    assert store.metadata(entry.key)["sha256"] == entry.sha256

    backups.restore_control_db(store, entry.key, fresh_database)
    with pytest.raises(backups.BackupError, match="fresh"):
        backups.restore_control_db(store, entry.key, fresh_database)

    restored = connect_database(fresh_database)
    try:
        with restored.connection_context():
            machine = Machine.get(Machine.address == "10.0.1.5")
            assert (machine.tenant.email, machine.state) == ("ada@example.com", "ready")
    finally:
        restored.close()
        connect_database(settings.database_url)


def test_a_restored_agent_keeps_its_mcp_servers_private(tmp_path, store):
    """Issue 19, finding 9: the pushed MCP configuration (with its proxy token) survives a nightly
    snapshot and a deprovision archive, and comes back readable by the agent's user only."""
    data = make_agent_data(tmp_path / "agents" / "7")
    open_wal_store(data / "memory.db", "likes green tea").close()
    servers = '{"mcpServers": {"composio": {"url": "https://hermes.test/mcp/tenants/7"}}}'
    (data / "mcp_servers.json").write_text(servers)
    (data / "mcp_servers.json").chmod(0o600)

    [entry], failures = backups.backup_tenants(store, [("7", None)],
                                               backups.LocalSnapshotArchiver(tmp_path / "agents"))
    assert failures == {}
    from_snapshot = tmp_path / "fresh" / "7"
    report = backups.restore_tenant(store, "7", entry.key, backups.LocalRestore(from_snapshot))
    assert '"files": ["mcp_servers.json"]' in report

    key = archive_key("prod", "7")
    archive_directory(store, data, key, {"tenant": "7"})
    from_archive = tmp_path / "restored" / "7"
    backups.restore_tenant(store, "7", key, backups.LocalRestore(from_archive))

    for target in (from_snapshot, from_archive):
        restored = target / "mcp_servers.json"
        assert restored.read_text() == servers
        assert restored.stat().st_mode & 0o777 == 0o600


def test_a_tampered_mcp_servers_file_is_refused(tmp_path):
    data = make_agent_data(tmp_path / "data")
    (data / "mcp_servers.json").write_text('{"mcpServers": {}}')
    snapshot = agent_backup("snapshot", "--data-dir", str(data), "-").stdout
    members = {}
    with tarfile.open(fileobj=io.BytesIO(snapshot), mode="r:gz") as tar:
        for member in tar.getmembers():
            members[member] = tar.extractfile(member).read()
    forged = io.BytesIO()
    with tarfile.open(fileobj=forged, mode="w:gz") as tar:
        for member, content in members.items():
            body = content
            if member.name == "mcp_servers.json":
                body = b'{"mcpServers": {"evil": {"url": "https://evil.example/mcp"}}}'
                member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    refused = agent_backup("restore", "--data-dir", str(tmp_path / "target"), "-",
                           stdin=forged.getvalue())
    assert refused.returncode == 1 and b"mcp_servers.json does not match" in refused.stderr
    assert not (tmp_path / "target" / "mcp_servers.json").exists()
