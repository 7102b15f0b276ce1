"""Pause, resume and restore (the subscription lifecycle, issue #10) on both providers.

Hetzner: the hcloud API stand-in powers servers off and on; the Pulumi workspace stand-in
creates them; agent data lives in ``<agent_data>/<tenant>`` (``LocalDirectoryArchiver`` /
``LocalDirectoryRestorer``), restored with the agent's own ``agent.backup restore``.
Local: ``LocalProvisioner`` with a stand-in interpreter that just sleeps, so pausing and
resuming are about real processes without starting real agents.
"""

from __future__ import annotations

import io
import sqlite3
import stat
import tarfile
from contextlib import closing

import pytest

from control.errors import ProvisioningError
from control.providers.archive import LocalObjectStore, archive_directory, archive_key, read_archive
from control.providers.base import MachineSpec
from control.providers.hetzner.archive import LocalDirectoryRestorer
from control.providers.local import LocalProvisioner


def write_memory(data, fact: str) -> None:
    data.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(data / "memory.db")) as db:
        db.execute("CREATE TABLE IF NOT EXISTS facts (text TEXT)")
        db.execute("INSERT INTO facts VALUES (?)", (fact,))
        db.commit()
    (data / "skills" / "brew-tea").mkdir(parents=True, exist_ok=True)
    (data / "skills" / "brew-tea" / "SKILL.md").write_text("steep 3 minutes\n")


def facts(data) -> list[str]:
    with closing(sqlite3.connect(data / "memory.db")) as db:
        return [row[0] for row in db.execute("SELECT text FROM facts")]


def server_status(hcloud_api) -> list[str]:
    return [s["status"] for s in hcloud_api.servers.values()]


# -- Hetzner -------------------------------------------------------------------------------------


def test_pause_powers_the_server_off_and_resume_on_keeping_it(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    (server_id,) = hcloud_api.servers

    assert prov.pause("alice").state == "stopped"
    assert server_status(hcloud_api) == ["off"]
    assert prov.pause("alice").state == "stopped"  # idempotent: no second poweroff
    assert prov.resume("alice").state == "running"
    assert list(hcloud_api.servers) == [server_id] and server_status(hcloud_api) == ["running"]
    commands = [a["command"] for a in hcloud_api.actions.values()]
    assert commands.count("stop_server") == 1 and commands.count("start_server") == 1


def test_restart_reboots_the_server_and_keeps_it(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    (server_id,) = hcloud_api.servers

    assert prov.restart("alice").state == "running"

    assert list(hcloud_api.servers) == [server_id] and server_status(hcloud_api) == ["running"]
    assert [a["command"] for a in hcloud_api.actions.values()].count("reboot_server") == 1
    with pytest.raises(ProvisioningError, match="no server"):
        prov.restart("nobody")


def test_pause_without_a_machine_is_refused(make_provisioner):
    with pytest.raises(ProvisioningError, match="no server"):
        make_provisioner().pause("nobody")


def test_archive_of_a_paused_server_powers_it_on_first_and_restores_onto_a_new_one(
        make_provisioner, hcloud_api, agent_data, spec_env):
    write_memory(agent_data / "alice", "likes green tea")
    prov = make_provisioner(restorer=LocalDirectoryRestorer(agent_data))
    prov.provision(MachineSpec("alice", "light", spec_env))
    prov.pause("alice")

    archive = prov.deprovision("alice")

    assert [a["command"] for a in hcloud_api.actions.values()][-1] == "start_server"
    assert archive.key.startswith("archives/test/alice/") and hcloud_api.servers == {}
    # The next machine gets the archive restored before the control plane waits for its agent
    # (here the "VM" disk is the local data dir, emptied as a new server's would be).
    for path in sorted((agent_data / "alice").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    prov.provision(MachineSpec("alice", "light", spec_env, restore_archive_key=archive.key))
    assert facts(agent_data / "alice") == ["likes green tea"]
    assert (agent_data / "alice" / "skills" / "brew-tea" / "SKILL.md").exists()


def test_a_restore_is_retried_while_the_vm_boots_then_fails_as_transient(
        make_provisioner, hcloud_api, agent_data, spec_env, sleeps):
    write_memory(agent_data / "src", "x")
    attempts = []

    def flaky(tenant, address, archive):
        attempts.append(address)
        if len(attempts) < 3:
            raise ProvisioningError("ssh: connect to host: Connection refused")
        return '{"format": "archive"}'

    prov = make_provisioner(restorer=flaky)
    key = archive_key("test", "alice")
    archive_directory(prov.store, agent_data / "src", key)
    prov.provision(MachineSpec("alice", "light", spec_env, restore_archive_key=key))
    assert len(attempts) == 3 and attempts[0] and attempts[0].startswith("10.")
    assert sleeps == [2.0, 4.0]

    def broken(tenant, address, archive):
        raise ProvisioningError("agent.backup: not a readable gzipped tar archive")

    prov = make_provisioner(restorer=broken)
    with pytest.raises(ProvisioningError, match="restoring tenant alice") as caught:
        prov.provision(MachineSpec("alice", "light", spec_env, restore_archive_key=key))
    assert caught.value.code == "provisioning_transient"


def test_a_missing_or_tampered_archive_is_refused_before_any_server_exists(
        make_provisioner, hcloud_api, agent_data, spec_env):
    prov = make_provisioner(restorer=LocalDirectoryRestorer(agent_data))
    with pytest.raises(ProvisioningError, match="missing"):
        prov.provision(MachineSpec("alice", "light", spec_env, restore_archive_key="archives/test/alice/x.tar.gz"))
    write_memory(agent_data / "src", "x")
    key = archive_key("test", "alice")
    archive_directory(prov.store, agent_data / "src", key)
    prov.store.put_bytes(key, b"tampered")
    with pytest.raises(ProvisioningError, match="SHA-256"):
        prov.provision(MachineSpec("alice", "light", spec_env, restore_archive_key=key))
    assert hcloud_api.servers == {}


# -- Local ---------------------------------------------------------------------------------------


@pytest.fixture
def sleeper(tmp_path):
    """An "interpreter" that ignores its arguments and sleeps: a process to stop and start."""
    script = tmp_path / "python-sleeps"
    script.write_text("#!/bin/sh\nexec sleep 300\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


@pytest.fixture
def local(tmp_path, sleeper):
    prov = LocalProvisioner(tmp_path / "data" / "agents", stop_timeout=2.0, python=sleeper)
    yield prov
    prov.close()


def test_local_pause_stops_the_process_keeps_the_data_and_survives_a_restart(local, tmp_path, sleeper):
    local.provision(MachineSpec("7", "light", {"HERMES_AGENT_TOKEN": "t"}))
    write_memory(local.data_dir("7"), "likes green tea")
    assert "7" in local.pids()

    assert local.pause("7").state == "stopped"
    assert "7" not in local.pids() and facts(local.data_dir("7")) == ["likes green tea"]
    restarted = LocalProvisioner(local.agents_dir, python=sleeper)
    try:
        assert restarted.adopt() == []  # a paused agent is not started by a restart
    finally:
        restarted.close()

    assert local.resume("7").state == "running" and "7" in local.pids()
    assert local.resume("7").state == "running"  # idempotent
    with pytest.raises(ProvisioningError):
        local.pause("8")


def test_local_restart_starts_a_new_agent_process_on_the_same_data(local):
    local.provision(MachineSpec("7", "light", {"HERMES_AGENT_TOKEN": "t"}))
    write_memory(local.data_dir("7"), "likes green tea")
    before = local.pids()["7"]

    assert local.restart("7").state == "running"

    assert local.pids()["7"] != before and facts(local.data_dir("7")) == ["likes green tea"]
    local.pause("7")
    with pytest.raises(ProvisioningError, match="no running machine"):
        local.restart("7")


def test_local_archive_has_the_shared_format_and_restores_before_the_agent_starts(local, tmp_path):
    local.provision(MachineSpec("7", "light", {"HERMES_AGENT_TOKEN": "secret-token"}))
    write_memory(local.data_dir("7"), "likes green tea")

    result = local.deprovision("7")

    assert result.key.startswith("archives/local/7/") and not local.data_dir("7").exists()
    assert isinstance(local.store, LocalObjectStore)
    assert local.store.root == tmp_path / "data" / "archives"  # backups.store_from_settings' store
    with tarfile.open(fileobj=io.BytesIO(read_archive(local.store, result.key))) as tar:
        names = tar.getnames()
    assert "memory.db" in names and "skills/brew-tea/SKILL.md" in names
    assert "machine.json" not in names and not any(n.startswith("7/") for n in names)

    # The restore runs ``agent.backup`` with a real interpreter (the agent stays a sleeper).
    local.restorer = LocalDirectoryRestorer(local.agents_dir)
    local.provision(MachineSpec("7", "light", {}, restore_archive_key=result.key))
    assert facts(local.data_dir("7")) == ["likes green tea"]
    assert "7" in local.pids()
