"""Deprovision: the agent's data reaches object storage before anything is destroyed."""

from __future__ import annotations

import io
import json
import os
import tarfile

import pytest

from control.errors import ProvisioningError
from control.providers.base import MachineSpec
from control.providers.hetzner.archive import SshTarArchiver
from control.providers.hetzner.config import TENANT_PROJECT


def write_agent_data(root, tenant):
    data = root / tenant
    (data / "memory").mkdir(parents=True)
    (data / "memory" / "notes.md").write_text("likes green tea\n")
    (data / "agent.db").write_bytes(os.urandom(4096))
    return data


def test_deprovision_archives_to_s3_then_destroys_and_removes_the_stack(
        make_provisioner, workspace, hcloud_api, s3_store, agent_data, spec_env):
    write_agent_data(agent_data, "alice")
    prov = make_provisioner(store=s3_store)
    prov.provision(MachineSpec("alice", "light", spec_env))

    result = prov.deprovision("alice")

    assert result.key.startswith("archives/test/alice/") and result.key.endswith(".tar.gz")
    with tarfile.open(fileobj=io.BytesIO(s3_store.get_bytes(result.key))) as tar:
        assert tar.extractfile("memory/notes.md").read() == b"likes green tea\n"
    meta = s3_store.metadata(result.key)
    assert meta["tenant"] == "alice" and meta["env"] == "test" and meta["server-id"]
    manifest = json.loads(s3_store.get_bytes(result.key + ".manifest.json"))
    assert manifest["sha256"] == result.sha256 and manifest["bytes"] == result.bytes
    assert workspace.stacks == {} and hcloud_api.servers == {}
    ops = [op for op, _ in workspace.calls]
    assert ops.index("destroy") < ops.index("remove")
    assert prov.status("alice").state == "absent"


def test_a_failing_archive_destroys_nothing(make_provisioner, workspace, hcloud_api, s3_store,
                                            spec_env):
    prov = make_provisioner(store=s3_store)  # no data directory for alice: the archive fails
    prov.provision(MachineSpec("alice", "light", spec_env))

    with pytest.raises(ProvisioningError, match="no agent data directory"):
        prov.deprovision("alice")

    assert "destroy" not in [op for op, _ in workspace.calls]
    assert (TENANT_PROJECT, "test-tenant-alice") in workspace.stacks
    assert len(hcloud_api.servers) == 1
    assert s3_store.list_keys("archives/") == []


def test_deprovision_without_archive_and_of_an_absent_tenant(make_provisioner, workspace,
                                                             spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    assert prov.deprovision("alice", archive=False) is None
    assert workspace.stacks == {}
    assert prov.deprovision("alice") is None  # idempotent


def test_deprovision_forgets_a_scheduled_downgrade(make_provisioner, agent_data, spec_env):
    write_agent_data(agent_data, "alice")
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "heavy", spec_env))
    prov.resize("alice", "light")
    prov.deprovision("alice")
    assert prov.scheduled_resizes() == []


def test_ssh_archiver_streams_the_remote_tar_into_the_store(fake_ssh, tmp_path, agent_data,
                                                            s3_store):
    data = write_agent_data(agent_data, "alice")
    archiver = SshTarArchiver(ssh_binary=fake_ssh, data_dir=str(data), key_path="/keys/id",
                              stop_units=())

    result = archiver("alice", "10.0.1.5", s3_store, "archives/test/alice/x.tar.gz",
                      {"tenant": "alice"})

    with tarfile.open(fileobj=io.BytesIO(s3_store.get_bytes(result.key))) as tar:
        assert "./memory/notes.md" in tar.getnames()
    assert s3_store.metadata(result.key)["source"] == f"ssh:10.0.1.5:{data}"
    argv = SshTarArchiver(key_path="/keys/id").command("10.0.1.5")
    assert argv[-2] == "root@10.0.1.5" and "BatchMode=yes" in argv and "/keys/id" in argv
    assert argv[-1] == ("systemctl stop hermes-agent.service hermes-huey.service && "
                        "tar -czf - -C /var/lib/hermes .")


def test_ssh_archiver_failure_leaves_no_partial_archive(fake_ssh, tmp_path, s3_store):
    archiver = SshTarArchiver(ssh_binary=fake_ssh, data_dir=str(tmp_path / "missing"),
                              stop_units=())
    with pytest.raises(ProvisioningError, match="over SSH failed"):
        archiver("alice", "10.0.1.5", s3_store, "archives/test/alice/y.tar.gz", {})
    assert s3_store.list_keys("archives/") == []
