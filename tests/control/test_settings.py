"""Settings.from_env reads every declared variable once (control/settings.py, wire/declared.py):
derived defaults, the bus choice, the Hetzner group, what agents are handed, and refusals."""

from __future__ import annotations

import pytest

from control.errors import ConfigError
from control.settings import AGENT_ENV_KEYS, SLACK_SCOPES, Settings


def read(tmp_path, **env) -> Settings:
    return Settings.from_env({"HERMES_DATA_DIR": str(tmp_path), **env})


def test_defaults_derive_from_the_data_dir_and_port(tmp_path):
    settings = read(tmp_path, HERMES_PORT="8123")
    assert settings.database_url == f"sqlite:///{tmp_path}/control.db"
    assert settings.bus_url == f"sqlite:///{tmp_path}/bus.db"
    assert settings.public_url == "http://127.0.0.1:8123"
    assert settings.port == 8123 and settings.telegram_bot_username == "HermesMaxBot"
    assert settings.slack_scopes == SLACK_SCOPES and settings.plan_budget_cents == {"light": 50, "heavy": 150}


def test_an_empty_variable_means_the_default(tmp_path):
    settings = read(tmp_path, HERMES_PORT="", TELEGRAM_API_BASE="", HERMES_PROVISIONER="",
                    SLACK_SCOPES=",", HERMES_DEFAULT_TZ="", HERMES_TZ="")
    assert settings.port == 8000 and settings.provisioner == "local"
    assert settings.telegram_api_base == "https://api.telegram.org"
    assert settings.slack_scopes == SLACK_SCOPES and settings.default_tz == "UTC"


def test_constructor_and_overrides_keep_working_without_the_environment(tmp_path):
    settings = Settings(data_dir=str(tmp_path), port=9000, huey_immediate=True)
    assert settings.public_url == "http://127.0.0.1:9000" and settings.huey_immediate
    moved = settings.with_overrides(env="staging")
    assert moved.env == "staging" and moved.port == 9000
    # A mutable default is not shared between instances.
    assert settings.plan_budget_cents is not Settings(data_dir=str(tmp_path)).plan_budget_cents


@pytest.mark.parametrize(("env", "expected"), [
    ({"REDIS_URL": "redis://r:6379/0"}, "redis://r:6379/0"),
    ({"REDIS_URL": "redis://r:6379/0", "HERMES_BUS": "sqlite", "HERMES_BUS_URL": "sqlite:////b.db"},
     "sqlite:////b.db"),
    ({"HERMES_BUS_URL": "sqlite:////b.db"}, "sqlite:////b.db"),
])
def test_bus_is_redis_when_redis_url_is_set_unless_sqlite_is_forced(tmp_path, env, expected):
    assert read(tmp_path, **env).bus_url == expected


@pytest.mark.parametrize(("env", "message"), [
    ({"HERMES_BUS": "kafka"}, "HERMES_BUS must be redis or sqlite"),
    ({"HERMES_BUS": "redis"}, "HERMES_BUS=redis needs REDIS_URL"),
    ({"HERMES_PORT": "eighty"}, "HERMES_PORT"),
    ({"HERMES_READY_TIMEOUT": "soon"}, "HERMES_READY_TIMEOUT"),
    ({"HETZNER_SERVER_TYPES": "cx23"}, "HETZNER_SERVER_TYPES: entry 'cx23' must look like key=value"),
    ({"STRIPE_PRICE_PLANS": "price_1=gold"}, "STRIPE_PRICE_PLANS: plans must be light or heavy"),
    ({"HERMES_PLAN_BUDGET_CENTS": "light=lots"}, "HERMES_PLAN_BUDGET_CENTS"),
    ({"HERMES_PROVISIONER": "aws"}, "HERMES_PROVISIONER must be local or hetzner"),
    ({"HERMES_BACKUP_HOUR": "24"}, "HERMES_BACKUP_HOUR"),
    ({"HERMES_GRACE_DAYS": "-1"}, "HERMES_GRACE_DAYS"),
    ({"HERMES_LOG_FORMAT": "xml"}, "HERMES_LOG_FORMAT"),
])
def test_a_bad_value_is_refused_naming_its_variable(tmp_path, env, message):
    with pytest.raises(ConfigError, match=message):
        read(tmp_path, **env)


def test_hetzner_group_lists_and_urls_are_parsed(tmp_path):
    settings = read(tmp_path, HERMES_PROVISIONER="hetzner", HCLOUD_TOKEN="tok",
                    HETZNER_SERVER_TYPES="light=cx23, heavy=cx33", HETZNER_SSH_KEY_NAMES="a, b,",
                    HETZNER_IMAGE_LLM_BACKENDS="anthropic", ARCHIVE_BUCKET="bucket",
                    PULUMI_CONFIG_PASSPHRASE="pass", HERMES_DRIFT_DELAY="0.5",
                    SLACK_API_BASE="http://127.0.0.1:1/api/", COMPOSIO_API_BASE="http://c/")
    assert settings.hcloud_token == "tok" and settings.archive_bucket == "bucket"
    assert settings.hetzner_server_types == {"light": "cx23", "heavy": "cx33"}
    assert settings.hetzner_ssh_key_names == ("a", "b")
    assert settings.hetzner_image_llm_backends == ("anthropic",)
    assert settings.pulumi_config_passphrase == "pass" and settings.drift_delay == 0.5
    assert settings.slack_api_base == "http://127.0.0.1:1/api" and settings.composio_api_base == "http://c"


def test_agents_are_handed_only_the_agent_variables_that_are_set(tmp_path):
    settings = read(tmp_path, ANTHROPIC_API_KEY="sk-ant", HERMES_LOG_FORMAT="json", OPENAI_API_KEY="",
                    HCLOUD_TOKEN="not-for-agents", HERMES_MODEL="claude-haiku-4-5")
    # Provider keys stay with the LLM gateway (issue #19).
    assert settings.agent_env == {"HERMES_MODEL": "claude-haiku-4-5", "HERMES_LOG_FORMAT": "json"}
    assert settings.llm_anthropic_api_key == "sk-ant"
    assert set(settings.agent_env) <= set(AGENT_ENV_KEYS)


def test_default_zone_falls_back_to_hermes_tz(tmp_path):
    assert read(tmp_path, HERMES_TZ="Europe/Berlin").default_tz == "Europe/Berlin"
    assert read(tmp_path, HERMES_TZ="Europe/Berlin", HERMES_DEFAULT_TZ="Asia/Tokyo").default_tz == "Asia/Tokyo"


def test_every_variable_handed_to_agents_is_one_the_agent_reads():
    # AGENT_ENV_KEYS names the agent's variables on the control side (control never imports
    # agent): a rename on either side would silently stop passing it.
    from agent.config import AgentConfig
    from wire.declared import env_names

    read_by_agent = {name for names in env_names(AgentConfig).values() for name in names}
    assert set(AGENT_ENV_KEYS) - read_by_agent == set()
