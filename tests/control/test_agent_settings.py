"""What the control plane tells each agent: LLM settings, the plan's budget, the time zone and
the Redis CA, and a Hetzner tenant config built from exactly that."""

from __future__ import annotations

import pytest

from control.errors import ConfigError
from control.providers.hetzner.config import HetznerConfig
from control.services import llm_gateway
from control.services.agent_settings import PLAN_BUDGETS_VAR, agent_env_for, base_agent_env
from control.settings import Settings
from infra import tenant_config as tc

PROD_ENV = {
    "HERMES_LLM_CHAIN": "anthropic,openai_compat", "ANTHROPIC_API_KEY": "sk-ant-prod",
    "OPENAI_BASE_URL": "https://openrouter.ai/api/v1", "OPENAI_API_KEY": "sk-or-prod",
    "HERMES_OPENAI_MODEL": "qwen/qwen3-8b", "HERMES_PUBLIC_URL": "https://control.example.test",
    "REDIS_URL": "rediss://admin:pw@10.0.1.20:6380/0", "HERMES_BUS_CA_FILE": "/etc/hermes/ca.pem",
}


def settings(tmp_path, **env) -> Settings:
    return Settings.from_env({"HERMES_DATA_DIR": str(tmp_path), **env})


@pytest.mark.parametrize(("plan", "cents"), [("light", "50"), ("heavy", "150")])
def test_each_plan_gets_its_own_daily_budget(tmp_path, plan, cents):
    env = agent_env_for(base_agent_env(settings(tmp_path)), plan)
    assert env["HERMES_DAILY_BUDGET_CENTS"] == cents
    assert PLAN_BUDGETS_VAR not in env


def test_plan_budgets_come_from_the_control_setting(tmp_path):
    base = base_agent_env(settings(tmp_path, HERMES_PLAN_BUDGET_CENTS="light=20,heavy=400"))
    assert agent_env_for(base, "heavy")["HERMES_DAILY_BUDGET_CENTS"] == "400"


@pytest.mark.parametrize("raw", ["light=lots", "gold=100", "light=-5"])
def test_malformed_plan_budgets_are_refused(tmp_path, raw):
    with pytest.raises(ConfigError, match="HERMES_PLAN_BUDGET_CENTS"):
        settings(tmp_path, HERMES_PLAN_BUDGET_CENTS=raw)


def test_time_zone_is_passed_through_and_must_be_iana(tmp_path):
    assert base_agent_env(settings(tmp_path))["HERMES_TZ"] == "UTC"
    env = base_agent_env(settings(tmp_path, HERMES_DEFAULT_TZ="Asia/Tokyo"))
    assert env["HERMES_TZ"] == "Asia/Tokyo"
    with pytest.raises(ConfigError, match="HERMES_DEFAULT_TZ"):
        settings(tmp_path, HERMES_DEFAULT_TZ="Berlin")


def test_llm_settings_and_ca_path_reach_the_agent_env(tmp_path):
    env = agent_env_for(base_agent_env(settings(tmp_path, **PROD_ENV)), "light")
    for key in ("HERMES_LLM_CHAIN", "HERMES_OPENAI_MODEL", "HERMES_BUS_CA_FILE"):
        assert env[key] == PROD_ENV[key]
    assert env["HERMES_CONTROL_URL"] == "https://control.example.test"


def test_agents_get_the_gateway_and_never_a_provider_key(tmp_path):
    env = agent_env_for(base_agent_env(settings(tmp_path, **PROD_ENV)), "light")
    assert env["ANTHROPIC_BASE_URL"] == "https://control.example.test/llm/anthropic"
    assert env["OPENAI_BASE_URL"] == env["HERMES_TRANSCRIBE_URL"] == (
        "https://control.example.test/llm/openai/v1")
    values = " ".join(env.values())
    for operator_only in ("sk-ant-prod", "sk-or-prod", "openrouter.ai"):
        assert operator_only not in values
    keyed = llm_gateway.with_token(env, "tenant-token")
    assert {keyed[k] for k in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY",
                               "HERMES_TRANSCRIBE_API_KEY")} == {"tenant-token"}


def test_every_setting_the_control_plane_sends_is_carried_to_a_tenant_vm(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    env = agent_env_for(base_agent_env(settings(tmp_path, **{
        **PROD_ENV, "HERMES_BUS_CA_FILE": str(ca)})), "heavy")
    env = llm_gateway.with_token(env, "llm-tok")
    env.update(HERMES_TENANT="7", HERMES_AGENT_TOKEN="tok")
    config = HetznerConfig(env="test", hcloud_token="t", snapshot_id="1", network_id="2",
                           firewall_label="fw=test", control_url=env["HERMES_CONTROL_URL"],
                           pulumi_backend_url="file:///tmp/x", pulumi_passphrase="p")
    entries = config.tenant_config("7", env)
    carried = {spec.env_var for spec in tc.AGENT_SETTINGS if spec.key in entries}
    files = {f.env_var for f in tc.AGENT_FILES if f.key in entries}
    assert set(env) - carried - files == {"HERMES_TENANT"}  # the tenant program adds it
