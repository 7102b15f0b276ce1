"""The orphan sweep: servers labelled for a tenant that no stack or tenant owns."""

from __future__ import annotations

from control.providers.base import MachineSpec


def test_sweep_reports_an_orphan_without_touching_it(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    ghost = hcloud_api.add_server("hermes-test-ghost", {"app": "hermes", "env": "test",
                                                        "tenant": "ghost"})
    hcloud_api.add_server("hermes-test-redis", {"app": "hermes", "env": "test", "role": "redis"})
    hcloud_api.add_server("other-env", {"app": "hermes", "env": "prod", "tenant": "zed"})

    report = prov.reconcile()

    assert report.checked == 3
    assert [(o.server_id, o.tenant, o.reason) for o in report.orphans] == [
        (ghost["id"], "ghost", "no_stack")]
    assert ghost["id"] in hcloud_api.servers and report.removed == []
    assert "reason=no_stack: left in place" in report.render()


def test_sweep_removes_an_orphan_after_archiving_it(make_provisioner, hcloud_api, agent_data,
                                                    spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    (agent_data / "ghost").mkdir()
    (agent_data / "ghost" / "memory.db").write_bytes(b"ghost memories")
    ghost = hcloud_api.add_server("hermes-test-ghost", {"app": "hermes", "env": "test",
                                                        "tenant": "ghost"})

    report = prov.reconcile(remove=True)

    assert report.removed == [ghost["id"]] and report.clean
    assert ghost["id"] not in hcloud_api.servers
    assert len(hcloud_api.servers) == 1  # alice's server stays
    [key] = [k for k in prov.store.list_keys("archives/test/ghost/") if k.endswith(".tar.gz")]
    assert key.endswith(f"-server{ghost['id']}.tar.gz")


def test_an_orphan_whose_archive_fails_is_kept_and_reported(make_provisioner, hcloud_api):
    prov = make_provisioner()
    ghost = hcloud_api.add_server("hermes-test-ghost", {"app": "hermes", "env": "test",
                                                        "tenant": "ghost"})
    report = prov.reconcile(remove=True)  # no data directory for ghost: archive fails
    assert ghost["id"] in hcloud_api.servers
    assert "no agent data directory" in report.failures[ghost["id"]] and not report.clean


def test_inactive_tenant_is_deprovisioned_through_its_stack(make_provisioner, workspace,
                                                           hcloud_api, agent_data, spec_env):
    prov = make_provisioner()
    (agent_data / "alice").mkdir()
    prov.provision(MachineSpec("alice", "light", spec_env))
    prov.provision(MachineSpec("bob", "light", spec_env))

    report = prov.reconcile(known_tenants={"bob"}, remove=True)

    assert [(o.tenant, o.reason) for o in report.orphans] == [("alice", "inactive_tenant")]
    assert [s["labels"]["tenant"] for s in hcloud_api.servers.values()] == ["bob"]
    assert [name for _, name in workspace.stacks] == ["test-tenant-bob"]


def test_a_second_server_for_a_tenant_is_untracked(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    extra = hcloud_api.add_server("hermes-test-alice-2", {"app": "hermes", "env": "test",
                                                          "tenant": "alice"})
    assert [(o.server_id, o.reason) for o in prov.reconcile().orphans] == [
        (extra["id"], "untracked")]


def test_busy_stacks_are_skipped(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    hcloud_api.add_server("hermes-test-alice-2", {"app": "hermes", "env": "test",
                                                  "tenant": "alice"})
    with prov.lock.hold(prov.config.stack_name("alice")):
        report = prov.reconcile()
    assert report.orphans == [] and report.skipped_busy == ["alice"]
