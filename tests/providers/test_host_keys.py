"""SSH to tenant VMs trusts each machine's own pinned host key (issue #19, finding 7).

The OpenSSH client is the real one; the VM side is a small paramiko server presenting a
host key (no sshd is installed here).  Hetzner reuses private IPs: a new machine on the
address of a deleted one must work, and a machine showing any key but its pin must not.
"""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest
import yaml
from support.ssh_server import SshServer

from control.errors import ProvisioningError
from control.providers.base import MachineSpec
from control.providers.hetzner.archive import SshTarArchiver
from control.providers.hetzner.config import TENANT_PROJECT
from control.providers.hetzner.host_keys import HostKeyStore
from infra import tenant_config as tc


@pytest.fixture
def client_key(tmp_path):
    path = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return str(path)


@pytest.fixture
def vm_data(tmp_path):
    data = tmp_path / "vm-data"
    (data / "memory").mkdir(parents=True)
    (data / "memory" / "notes.md").write_text("likes green tea\n")
    return data


def archiver(store: HostKeyStore, client_key: str, data, port: int) -> SshTarArchiver:
    return SshTarArchiver(key_path=client_key, user="root", data_dir=str(data), stop_units=(),
                          host_keys=store, connect_timeout=10,
                          extra_options={"Port": str(port), "IdentitiesOnly": "yes"})


def names_in(s3_store, key: str) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(s3_store.get_bytes(key))) as tar:
        return tar.getnames()


def test_a_new_machine_on_a_recycled_address_is_trusted_by_its_own_pin(tmp_path, client_key,
                                                                        vm_data, s3_store):
    store = HostKeyStore(tmp_path / "known_hosts")
    old_key = store.ensure("old")
    with SshServer(old_key.private) as old_vm:
        port = old_vm.port
        archiver(store, client_key, vm_data, port)(
            "old", "127.0.0.1", s3_store, "archives/old.tar.gz", {})
    store.remove("old")  # deprovisioned; Hetzner hands 127.0.0.1:port to the next server

    new_key = store.ensure("new")
    assert new_key.public != old_key.public
    with SshServer(new_key.private, port=port):
        result = archiver(store, client_key, vm_data, port)(
            "new", "127.0.0.1", s3_store, "archives/new.tar.gz", {})
    assert "./memory/notes.md" in names_in(s3_store, result.key)


def test_a_machine_showing_another_key_than_its_pin_is_refused(tmp_path, client_key, vm_data,
                                                               s3_store):
    store = HostKeyStore(tmp_path / "known_hosts")
    store.ensure("alice")
    impostor = HostKeyStore(tmp_path / "elsewhere").ensure("alice")  # same name, other key
    with SshServer(impostor.private) as vm:
        with pytest.raises(ProvisioningError, match="Host key verification failed"):
            archiver(store, client_key, vm_data, vm.port)(
                "alice", "127.0.0.1", s3_store, "archives/alice.tar.gz", {})
        assert vm.commands == []  # nothing ran on the impostor
        # Nor does another tenant's pin vouch for it.
        store.ensure("bob")
        with pytest.raises(ProvisioningError, match="Host key verification failed"):
            archiver(store, client_key, vm_data, vm.port)(
                "bob", "127.0.0.1", s3_store, "archives/bob.tar.gz", {})
    assert s3_store.list_keys("archives/") == []


def test_no_pin_no_ssh(tmp_path, client_key, vm_data, s3_store):
    store = HostKeyStore(tmp_path / "known_hosts")
    with pytest.raises(ProvisioningError, match="no pinned SSH host key for tenant carol"):
        archiver(store, client_key, vm_data, 22)(
            "carol", "127.0.0.1", s3_store, "archives/carol.tar.gz", {})


def test_provision_pins_the_key_cloud_init_installs_and_deprovision_forgets_it(
        make_provisioner, workspace, spec_env, tmp_path):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    known_hosts = prov.host_keys.known_hosts("alice")
    pin = known_hosts.read_text()
    config = workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")].config
    assert config[tc.SSH_HOST_KEY].secret
    settings = {key: entry.value for key, entry in config.items()}
    cloud = yaml.safe_load(tc.render_cloud_init("alice", settings).split("\n", 1)[1])
    assert cloud["ssh_genkeytypes"] == [] and cloud["ssh_deletekeys"] is True
    assert pin.split()[1:] == cloud["ssh_keys"]["ed25519_public"].split()[:2]
    assert "OPENSSH PRIVATE KEY" in cloud["ssh_keys"]["ed25519_private"]

    prov.provision(MachineSpec("alice", "light", spec_env))  # idempotent: same key, same pin
    assert known_hosts.read_text() == pin
    assert workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")].config[
        tc.SSH_HOST_KEY].value == config[tc.SSH_HOST_KEY].value

    prov.deprovision("alice", archive=False)
    assert not known_hosts.exists() and not known_hosts.parent.exists()
