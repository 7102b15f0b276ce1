"""The tenant program (infra.tenant.build) under Pulumi mocks, configured exactly as
HetznerProvisioner configures a tenant stack: from the shared stack's outputs plus the tenant's
own bus credentials and agent token as secrets."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pulumi
import pytest
import yaml

HERE = Path(__file__).resolve().parent
for _path in (str(HERE), str(HERE.parents[1])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pulumi_mocks as pm

from infra import tenant_config as tc


@pytest.fixture(scope="module")
def shared() -> pm.ProgramRun:
    return pm.run_shared_stack("staging")


@pytest.fixture(scope="module")
def light(shared) -> pm.ProgramRun:
    return pm.run_tenant(shared, "t42", "light")


def only_server(run: pm.ProgramRun) -> pm.Registration:
    (server,) = run.servers()
    return server


def agent_env(user_data: str) -> dict[str, str]:
    document = yaml.safe_load(user_data)
    (env_file,) = [f for f in document["write_files"] if f["path"] == "/etc/hermes/agent.env"]
    assert env_file["permissions"] == "0600"
    pairs = (line.split("=", 1) for line in env_file["content"].splitlines())
    return {key: json.loads(value) for key, value in pairs}


@pytest.mark.parametrize(("plan", "server_type"), [("light", "cx23"), ("heavy", "cx33")])
def test_server_type_follows_the_plan(shared, plan, server_type):
    run = pm.run_tenant(shared, "t42", plan)
    assert only_server(run).inputs["serverType"] == server_type
    assert (run.outputs["server_type"], run.outputs["plan"]) == (server_type, plan)


def test_plan_server_type_comes_from_stack_config(shared):
    run = pm.run_tenant(shared, "t42", "heavy", serverTypeHeavy="cx43")
    assert only_server(run).inputs["serverType"] == "cx43"


def test_server_boots_the_pinned_snapshot_on_the_private_network(shared, light):
    server = only_server(light)
    assert server.inputs["image"] == shared.outputs["snapshotId"]
    assert server.inputs["location"] == "nbg1"
    (attachment,) = server.inputs["networks"]
    assert attachment["networkId"] == shared.outputs["networkId"]
    assert ipaddress.ip_address(light.outputs["private_ip"]) in ipaddress.ip_network("10.0.16.0/20")


def test_new_snapshot_or_cloud_init_never_replaces_the_vm_and_disk_is_kept(light):
    server = only_server(light)
    assert server.inputs["keepDisk"] is True
    assert {"image", "userData"} <= set(server.ignore_changes)


def test_labels_identify_the_tenant_and_select_the_tenant_firewall(shared, light):
    labels = only_server(light).inputs["labels"]
    assert {k: labels[k] for k in ("app", "env", "tenant", "plan")} == {
        "app": "hermes",
        "env": "staging",
        "tenant": "t42",
        "plan": "light",
    }
    key, value = shared.outputs["tenantFirewallLabel"].split("=")
    assert labels[key] == value


def test_user_data_is_a_secret_holding_bus_url_and_token_that_never_shows_in_plain(light):
    server = only_server(light)
    assert server.plain_view["userData"] == pm.REDACTED
    env = agent_env(server.inputs["userData"])
    assert env == {
        "HERMES_TENANT": "t42",
        "HERMES_CONTROL_URL": "https://control.staging.hermes.example",
        "HERMES_BUS_URL": pm.BUS_URL,
        "HERMES_AGENT_TOKEN": pm.AGENT_TOKEN,
        "HERMES_LLM_CHAIN": "anthropic,openai_compat",
        "HERMES_MODEL": "claude-haiku-4-5",
        "ANTHROPIC_API_KEY": pm.ANTHROPIC_API_KEY,
        "OPENAI_BASE_URL": "https://openrouter.ai/api/v1",
        "OPENAI_API_KEY": pm.OPENAI_API_KEY,
        "HERMES_OPENAI_MODEL": "meta-llama/llama-3.1-8b-instruct",
        "HERMES_DAILY_BUDGET_CENTS": "50",
        "HERMES_TZ": "Europe/Berlin",
        "HERMES_LOG_FORMAT": "json",  # wire/logs.py: one JSON object per journal line
        "HERMES_METRICS_PORT": "9464",  # agent/metrics.py, scraped on the private network
        "HERMES_METRICS_ADDR": "0.0.0.0",
        "HERMES_DATA_DIR": "/var/lib/hermes",
        "HERMES_BUS_CA_FILE": "/etc/hermes/redis-ca.pem",
    }
    plain = json.dumps([r.plain_view for r in light.resources]) + json.dumps(light.outputs)
    for raw in (pm.AGENT_TOKEN, "bus-password-7f3a9c", pm.ANTHROPIC_API_KEY, pm.OPENAI_API_KEY):
        assert raw not in plain


def test_cloud_init_enables_and_restarts_both_agent_units(light):
    runcmd = yaml.safe_load(only_server(light).inputs["userData"])["runcmd"]
    assert ["systemctl", "enable", "hermes-agent.service", "hermes-huey.service"] in runcmd
    assert ["systemctl", "restart", "hermes-agent.service", "hermes-huey.service"] in runcmd


def test_exports_identify_the_machine(light):
    out = light.outputs
    assert out["server_id"].isdigit()
    assert out["server_name"] == "hermes-staging-t42"
    assert set(out) == {"server_id", "server_name", "private_ip", "server_type", "plan"}


def test_ssh_keys_come_from_the_comma_separated_names(shared):
    run = pm.run_tenant(shared, "t42", "light", sshKeyNames="ops-a, ops-b")
    assert only_server(run).inputs["sshKeys"] == ["ops-a", "ops-b"]


def test_unknown_plan_is_refused(shared):
    with pytest.raises(ValueError, match="unknown plan 'gold'"):
        pm.run_tenant(shared, "t42", "gold")


def test_tenant_id_that_is_not_a_label_value_is_refused(shared):
    with pytest.raises(ValueError, match="tenant id"):
        pm.run_tenant(shared, "someone@example.com", "light")


def test_missing_agent_token_is_a_config_error(shared):
    config, secrets = pm.tenant_stack_config(shared)
    del config[tc.AGENT_TOKEN]
    from infra import tenant

    with pytest.raises(pulumi.ConfigMissingError):
        pm.run_program(
            lambda: tenant.build("t42", "light"),
            stack="tenant-t42",
            config=config,
            secret_keys=secrets,
        )


def test_location_defaults_to_nbg1(shared):
    config, secrets = pm.tenant_stack_config(shared)
    del config[tc.LOCATION]
    from infra import tenant

    run = pm.run_program(
        lambda: tenant.build("t42", "light"), stack="tenant-t42", config=config, secret_keys=secrets
    )
    assert only_server(run).inputs["location"] == "nbg1"


def test_contract_module_imports_without_pulumi():
    code = (
        "import sys; sys.modules['pulumi'] = None; "
        "from infra import tenant_config as tc; print(len(tc.TENANT_CONFIG_KEYS))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=pm.REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(tc.TENANT_CONFIG_KEYS))


def test_contract_lists_every_key_with_secrets_marked():
    keys = tc.TENANT_CONFIG_KEYS
    assert all(k.startswith("hermes:") and spec.description for k, spec in keys.items())
    assert {k for k, spec in keys.items() if spec.secret} == {
        "hermes:busUrl", "hermes:agentToken", "hermes:anthropicApiKey", "hermes:openaiApiKey",
        "hermes:transcribeApiKey", "hermes:sshHostKey"}
    assert {spec.env_var for spec in keys.values() if spec.secret and spec.env_var} == {
        "HERMES_BUS_URL", "HERMES_AGENT_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY",
        "HERMES_TRANSCRIBE_API_KEY"}
    assert keys["hermes:location"].default == "nbg1"
    assert (keys["hermes:serverTypeLight"].default, keys["hermes:serverTypeHeavy"].default) == (
        "cx23",
        "cx33",
    )


def test_agent_env_escapes_quotes_and_refuses_newlines():
    values = {tc.BUS_URL: 'a"b\\c', tc.CONTROL_URL: "u", tc.AGENT_TOKEN: "k",
              tc.DAILY_BUDGET_CENTS: "50"}
    assert 'HERMES_BUS_URL="a\\"b\\\\c"' in tc.render_agent_env("t1", values)
    with pytest.raises(ValueError, match="HERMES_AGENT_TOKEN"):
        tc.render_agent_env("t1", {**values, tc.AGENT_TOKEN: "k\nHERMES_TENANT=evil"})


def test_server_name_is_a_hostname_even_for_odd_tenant_ids():
    assert tc.server_name("prod", "t42") == "hermes-prod-t42"
    odd = tc.server_name("prod", "Team_A.1")
    assert odd.startswith("hermes-prod-team-a-1-") and len(odd) <= 63
    assert odd != tc.server_name("prod", "team-a-1")
