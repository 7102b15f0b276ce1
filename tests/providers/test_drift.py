"""``hermes drift`` against the workspace and hcloud stand-ins."""

from __future__ import annotations

from click.testing import CliRunner
from providers_workspace_standin import RATE_LIMITED

from cli.drift import drift
from control.providers.base import MachineSpec


def run(prov, *args):
    return CliRunner().invoke(drift, ["--work-dir", ".", *args], obj={"provisioner": prov})


def provisioned(make_provisioner, spec_env, *tenants):
    prov = make_provisioner()
    for tenant in tenants:
        prov.provision(MachineSpec(tenant, "light", spec_env))
    return prov


def test_in_sync_infrastructure_exits_zero(make_provisioner, workspace, spec_env, sleeps):
    prov = provisioned(make_provisioner, spec_env, "alice", "bob")
    result = run(prov)

    assert result.exit_code == 0, result.output
    assert "ok     hermes-max/test" in result.output
    assert "ok     hermes-tenants/test-tenant-alice" in result.output
    assert "result: no drift" in result.output
    previews = [name for op, name in workspace.calls if op == "preview"]
    assert previews == ["test", "test-tenant-alice", "test-tenant-bob"]
    assert sleeps == [3.0, 3.0]  # staggered by the configured drift delay


def test_changed_server_type_and_shared_drift_are_reported(make_provisioner, workspace,
                                                          hcloud_api, spec_env):
    prov = provisioned(make_provisioner, spec_env, "alice", "bob")
    [alice] = [s for s in hcloud_api.servers.values() if s["labels"]["tenant"] == "alice"]
    alice["server_type"] = hcloud_api._type("cx53")  # resized by hand in the console
    workspace.shared_changes = {"update": 2}

    result = run(prov, "--delay", "0")

    assert result.exit_code == 1
    assert "DRIFT  hermes-max/test: update 2" in result.output
    assert "DRIFT  hermes-tenants/test-tenant-alice: update 1" in result.output
    assert "ok     hermes-tenants/test-tenant-bob" in result.output
    assert "DRIFT FOUND" in result.output


def test_orphans_fail_the_drift_check(make_provisioner, hcloud_api, spec_env):
    prov = provisioned(make_provisioner, spec_env, "alice")
    hcloud_api.add_server("hermes-test-ghost", {"app": "hermes", "env": "test", "tenant": "ghost"})

    result = run(prov)

    assert result.exit_code == 1
    assert "tenant=ghost reason=no_stack" in result.output
    assert run(prov, "--no-sweep").exit_code == 0


def test_rate_limited_preview_is_retried_and_a_failing_one_reported(make_provisioner, workspace,
                                                                   spec_env):
    prov = provisioned(make_provisioner, spec_env, "alice")
    workspace.fail("preview", RATE_LIMITED)
    assert run(prov).exit_code == 0

    workspace.fail("preview", "error: decrypting secret value: incorrect passphrase")
    result = run(prov)
    assert result.exit_code == 1 and "ERROR  hermes-max/test" in result.output
    assert "ok     hermes-tenants/test-tenant-alice" in result.output


def test_missing_settings_are_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HERMES_DATA_DIR", str(tmp_path))
    result = CliRunner().invoke(drift, ["--work-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "Hetzner provisioner settings missing" in result.output


def test_record_puts_the_result_in_the_audit_trail_for_the_overview(make_provisioner, spec_env,
                                                                     sleeps, tmp_path,
                                                                     monkeypatch):
    from control.db import database
    from control.models import AuditEntry
    from control.runtime import Runtime
    from control.settings import Settings

    monkeypatch.setenv("HERMES_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    Runtime(Settings(data_dir=str(tmp_path / "data")), upgrade_schema=True).close()  # deployed
    prov = provisioned(make_provisioner, spec_env, "alice")

    result = run(prov, "--record")

    assert result.exit_code == 0, result.output
    with database.connection_context():
        (row,) = AuditEntry.select().where(AuditEntry.action == "drift.check")
    assert row.target == "infrastructure" and '"ok": true' in row.after
