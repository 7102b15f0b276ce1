"""HetznerProvisioner orchestration against the workspace and hcloud stand-ins."""

from __future__ import annotations

import threading

import pytest
from providers_workspace_standin import CONCURRENT, RATE_LIMITED, SERVER_ERROR

from control.errors import ProvisioningError
from control.providers.base import MachineSpec
from control.providers.hetzner.config import TENANT_PROJECT, TenantProgram
from infra import tenant_config as tc


def tenant_servers(api, tenant):
    return [s for s in api.servers.values() if s["labels"].get("tenant") == tenant]


def test_provision_creates_one_stack_and_one_labelled_server(make_provisioner, workspace,
                                                             hcloud_api, spec_env):
    prov = make_provisioner()
    status = prov.provision(MachineSpec("alice", "light", spec_env))

    assert status.state == "running" and status.plan == "light"
    assert list(workspace.stacks) == [(TENANT_PROJECT, "test-tenant-alice")]
    [server] = tenant_servers(hcloud_api, "alice")
    assert server["labels"] == {"hermes-firewall": "test-tenant", "app": "hermes", "env": "test",
                                "tenant": "alice", "plan": "light"}
    assert server["server_type"]["name"] == "cx23"
    assert status.address == server["private_net"][0]["ip"]


def test_provisioning_twice_keeps_one_stack_and_one_server(make_provisioner, workspace,
                                                           hcloud_api, spec_env):
    prov = make_provisioner()
    first = prov.provision(MachineSpec("alice", "light", spec_env))
    second = prov.provision(MachineSpec("alice", "light", spec_env))

    assert len(workspace.stacks) == 1
    assert len(tenant_servers(hcloud_api, "alice")) == 1
    assert first.address == second.address


def test_bus_url_and_agent_token_are_secret_config(make_provisioner, workspace, spec_env):
    make_provisioner().provision(MachineSpec("alice", "heavy", spec_env))
    config = workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")].config

    assert config[tc.BUS_URL].secret and config[tc.BUS_URL].value == spec_env["HERMES_BUS_URL"]
    assert config[tc.AGENT_TOKEN].secret
    assert not config[tc.SNAPSHOT_ID].secret and config[tc.SNAPSHOT_ID].value == "424242"
    assert set(config) <= set(tc.TENANT_CONFIG_KEYS)


def test_inline_program_is_the_tenant_build_for_the_plan(make_provisioner):
    ref = make_provisioner().stack_ref("alice", "heavy")
    assert ref.program == TenantProgram("alice", "heavy")
    assert (ref.project, ref.name) == ("hermes-tenants", "test-tenant-alice")


def test_missing_agent_secrets_are_refused_before_any_stack_exists(make_provisioner, workspace):
    with pytest.raises(ProvisioningError, match="HERMES_AGENT_TOKEN"):
        make_provisioner().provision(MachineSpec("alice", "light", {"HERMES_BUS_URL": "redis://x"}))
    assert workspace.stacks == {}


def test_interrupted_update_is_recovered_without_a_second_server(make_provisioner, workspace,
                                                                 hcloud_api, spec_env):
    prov = make_provisioner()
    workspace.interrupt_next_up = True
    with pytest.raises(ProvisioningError):
        prov.provision(MachineSpec("alice", "light", spec_env))
    assert len(tenant_servers(hcloud_api, "alice")) == 1  # created but not in the state
    assert workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")].pending

    status = prov.provision(MachineSpec("alice", "light", spec_env))

    assert status.state == "running"
    stack = workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")]
    assert stack.pending == []
    [server] = tenant_servers(hcloud_api, "alice")
    assert str(server["id"]) == stack.outputs["server_id"]


def test_rate_limited_up_is_retried_with_backoff_then_succeeds(make_provisioner, workspace,
                                                               sleeps, spec_env):
    workspace.fail("up", RATE_LIMITED, times=2)
    status = make_provisioner().provision(MachineSpec("alice", "light", spec_env))

    assert status.state == "running"
    assert [op for op, _ in workspace.calls].count("up") == 3
    assert sleeps == [2.0, 4.0]


def test_concurrent_update_is_retried(make_provisioner, workspace, sleeps, spec_env):
    workspace.fail("up", CONCURRENT)
    assert make_provisioner().provision(MachineSpec("alice", "light", spec_env)).state == "running"
    assert len(sleeps) == 1


def test_persistent_server_errors_end_in_provisioning_error(make_provisioner, workspace, sleeps,
                                                           hcloud_api, spec_env):
    workspace.fail("up", SERVER_ERROR, times=10)
    with pytest.raises(ProvisioningError, match="after 5 attempts"):
        make_provisioner().provision(MachineSpec("alice", "light", spec_env))
    assert sleeps == [2.0, 4.0, 8.0, 16.0]
    assert tenant_servers(hcloud_api, "alice") == []


def test_backoff_is_capped(make_provisioner, workspace, sleeps, spec_env):
    workspace.fail("up", RATE_LIMITED, times=10)
    with pytest.raises(ProvisioningError):
        make_provisioner(retry_attempts=8, retry_max_delay=10.0).provision(
            MachineSpec("alice", "light", spec_env))
    assert max(sleeps) == 10.0


def test_a_fatal_pulumi_error_is_not_retried(make_provisioner, workspace, sleeps, spec_env):
    workspace.fail("up", "error: an unhandled error occurred: Program exited with non-zero exit")
    with pytest.raises(ProvisioningError, match="failed"):
        make_provisioner().provision(MachineSpec("alice", "light", spec_env))
    assert sleeps == []


@pytest.mark.parametrize(("server_type", "reason"), [("cx21", "does not exist"),
                                                 ("cx22", "deprecated")])
def test_unknown_or_deprecated_server_type_is_rejected(make_provisioner, workspace, hcloud_api,
                                                       spec_env, server_type, reason):
    prov = make_provisioner(server_types={"light": server_type, "heavy": "cx33"})
    with pytest.raises(ProvisioningError, match=reason) as info:
        prov.provision(MachineSpec("alice", "light", spec_env))
    assert info.value.code == "server_type_rejected"
    assert workspace.stacks == {} and hcloud_api.servers == {}


def test_upgrade_is_applied_now(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "light", spec_env))
    status = prov.resize("alice", "heavy")

    [server] = tenant_servers(hcloud_api, "alice")
    assert status.plan == "heavy" and server["server_type"]["name"] == "cx33"
    assert prov.scheduled_resizes() == []


def test_downgrade_waits_for_the_period_end(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "heavy", spec_env))
    status = prov.resize("alice", "light")

    [server] = tenant_servers(hcloud_api, "alice")
    assert server["server_type"]["name"] == "cx33" and status.plan == "heavy"
    assert "scheduled" in status.detail
    [record] = prov.scheduled_resizes()
    assert (record.tenant, record.from_plan, record.to_plan) == ("alice", "heavy", "light")

    applied = prov.apply_scheduled_resize("alice")

    assert applied.plan == "light" and server["server_type"]["name"] == "cx23"
    assert prov.scheduled_resizes() == []


def test_downgrade_can_be_forced_now(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    prov.provision(MachineSpec("alice", "heavy", spec_env))
    assert prov.resize("alice", "light", at_period_end=False).plan == "light"


def test_resizing_an_unknown_tenant_fails(make_provisioner):
    with pytest.raises(ProvisioningError, match="no machine"):
        make_provisioner().resize("nobody", "heavy")


def test_status_and_list(make_provisioner, hcloud_api, spec_env):
    prov = make_provisioner()
    assert prov.status("alice").state == "absent"
    prov.provision(MachineSpec("alice", "light", spec_env))
    prov.provision(MachineSpec("bob", "heavy", spec_env))
    hcloud_api.add_server("stray", {"app": "hermes", "env": "test", "tenant": "carol"})

    listed = {s.tenant: s for s in prov.list()}

    assert prov.status("alice").labels["tenant"] == "alice"
    assert {t: s.plan for t, s in listed.items() if t != "carol"} == {"alice": "light",
                                                                      "bob": "heavy"}
    assert listed["carol"].detail.startswith("orphan: no stack")


def test_a_held_stack_lock_blocks_a_second_worker(make_provisioner, spec_env):
    prov = make_provisioner(lock_timeout=0.0)
    name = prov.config.stack_name("alice")
    held, release = threading.Event(), threading.Event()

    def other_worker():
        with prov.lock.hold(name):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=other_worker)
    thread.start()
    try:
        assert held.wait(10)
        assert prov.status("alice").state == "provisioning"
        with pytest.raises(ProvisioningError, match="busy"):
            prov.provision(MachineSpec("alice", "light", spec_env))
    finally:
        release.set()
        thread.join()
    assert prov.provision(MachineSpec("alice", "light", spec_env)).state == "running"


@pytest.mark.parametrize(("llm_env", "needed"), [
    ({"HERMES_LLM": "anthropic", "ANTHROPIC_API_KEY": ""}, "ANTHROPIC_API_KEY"),
    ({"HERMES_LLM_CHAIN": "openai_compat", "HERMES_OPENAI_MODEL": "m"}, "OPENAI_BASE_URL"),
    ({"HERMES_LLM_CHAIN": "anthropic,openai_compat"}, "OPENAI_BASE_URL"),
    ({"HERMES_LLM": "", "ANTHROPIC_API_KEY": ""}, "not installed in the tenant image"),
])
def test_unusable_llm_backend_is_refused_before_any_stack_exists(make_provisioner, workspace,
                                                                 hcloud_api, spec_env, llm_env,
                                                                 needed):
    with pytest.raises(ProvisioningError, match=needed) as raised:
        make_provisioner().provision(MachineSpec("alice", "light", {**spec_env, **llm_env}))
    assert raised.value.code == "llm_not_configured"
    assert workspace.stacks == {} and tenant_servers(hcloud_api, "alice") == []


def test_local_backend_is_accepted_when_the_image_declares_it(make_provisioner, workspace,
                                                              spec_env):
    env = {**spec_env, "HERMES_LLM": "local", "ANTHROPIC_API_KEY": ""}
    prov = make_provisioner(image_llm_backends=("anthropic", "openai_compat", "local"))
    assert prov.provision(MachineSpec("alice", "light", env)).state == "running"
    config = workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")].config
    assert config["hermes:llm"].value == "local"


def test_missing_plan_budget_is_refused(make_provisioner, workspace, spec_env):
    env = {k: v for k, v in spec_env.items() if k != "HERMES_DAILY_BUDGET_CENTS"}
    with pytest.raises(ProvisioningError, match="HERMES_DAILY_BUDGET_CENTS"):
        make_provisioner().provision(MachineSpec("alice", "light", env))
    assert workspace.stacks == {}


def test_time_zone_that_is_not_iana_is_refused(make_provisioner, workspace, spec_env):
    with pytest.raises(ProvisioningError, match="HERMES_TZ"):
        make_provisioner().provision(MachineSpec("alice", "light",
                                                 {**spec_env, "HERMES_TZ": "Mars/Olympus"}))
    assert workspace.stacks == {}


def test_llm_keys_are_secret_config_and_the_ca_travels_as_plain_text(make_provisioner, workspace,
                                                                     spec_env, tmp_path):
    ca = tmp_path / "redis-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n")
    env = {**spec_env, "HERMES_LLM_CHAIN": "anthropic,openai_compat",
           "OPENAI_BASE_URL": "https://openrouter.ai/api/v1", "OPENAI_API_KEY": "sk-or-secret",
           "HERMES_OPENAI_MODEL": "meta-llama/llama-3.1-8b-instruct",
           "HERMES_TZ": "Europe/Berlin", "HERMES_BUS_CA_FILE": str(ca)}
    make_provisioner().provision(MachineSpec("alice", "light", env))
    config = workspace.stacks[(TENANT_PROJECT, "test-tenant-alice")].config

    secret = {key for key, entry in config.items() if entry.secret}
    assert secret == {tc.BUS_URL, tc.AGENT_TOKEN, "hermes:anthropicApiKey", "hermes:openaiApiKey",
                      tc.SSH_HOST_KEY}
    assert config["hermes:openaiApiKey"].value == "sk-or-secret"
    assert config[tc.BUS_CA_CERT].value == ca.read_text()
    assert config[tc.DAILY_BUDGET_CENTS].value == "50"
    assert config["hermes:tz"].value == "Europe/Berlin"
    assert config[tc.CONTROL_URL].value == "https://control.example.test"
    assert set(config) <= set(tc.TENANT_CONFIG_KEYS)


def test_unreadable_ca_file_is_refused(make_provisioner, workspace, spec_env, tmp_path):
    env = {**spec_env, "HERMES_BUS_CA_FILE": str(tmp_path / "missing.pem")}
    with pytest.raises(ProvisioningError, match=r"missing\.pem"):
        make_provisioner().provision(MachineSpec("alice", "light", env))
    assert workspace.stacks == {}


def test_no_log_line_or_redacted_config_shows_a_secret(make_provisioner, spec_env, capsys):
    prov = make_provisioner()
    env = {**spec_env, "OPENAI_API_KEY": "sk-or-secret-77", "HERMES_LLM_CHAIN": "anthropic"}
    prov.provision(MachineSpec("alice", "light", env))
    prov.resize("alice", "heavy")
    printed = capsys.readouterr()
    shown = printed.out + printed.err + repr(prov.config.redacted())
    assert "tenant_provisioned" in shown
    for secret in ("sk-ant-test-key-31d9", "sk-or-secret-77", "agent-token-abc", "s3cret",
                   "correct horse", "standin-token"):
        assert secret not in shown
