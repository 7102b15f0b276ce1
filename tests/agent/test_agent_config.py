"""Agent configuration refuses settings it cannot run with, at start-up."""

from __future__ import annotations

import pytest

from agent.config import AgentConfig, AgentConfigError


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../etc/passwd"])
def test_unknown_time_zone_is_refused_with_the_setting_named(zone):
    with pytest.raises(AgentConfigError, match="HERMES_TZ"):
        AgentConfig.from_env({"HERMES_TENANT": "t1", "HERMES_DATA_DIR": "/tmp/hermes-t1", "HERMES_TZ": zone})


def test_an_empty_zone_means_the_default_and_is_refused_as_an_argument():
    config = AgentConfig.from_env({"HERMES_TENANT": "t1", "HERMES_DATA_DIR": "/tmp/hermes-t1", "HERMES_TZ": ""})
    assert config.default_tz == "UTC"
    with pytest.raises(AgentConfigError, match="HERMES_TZ"):
        AgentConfig(tenant="t1", default_tz="")


def test_iana_time_zone_is_accepted():
    config = AgentConfig.from_env({"HERMES_TENANT": "t1", "HERMES_DATA_DIR": "/tmp/hermes-t1",
                                   "HERMES_TZ": "Europe/Berlin"})
    assert config.default_tz == "Europe/Berlin"
