"""Contract: the config ``HetznerProvisioner`` sets is exactly what ``infra.tenant.build`` reads.

Runs the real inline program (``TenantProgram``) under Pulumi's mocks (tests/infra's helper),
with the stack config produced by ``HetznerConfig.tenant_config``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from control.providers.hetzner.config import TenantProgram

HELPER = Path(__file__).resolve().parents[1] / "infra" / "pulumi_mocks.py"


@pytest.fixture(scope="module")
def pulumi_mocks():
    if not HELPER.exists():
        pytest.skip("tests/infra/pulumi_mocks.py is not there")
    name = "providers_contract_pulumi_mocks"
    spec = importlib.util.spec_from_file_location(name, HELPER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_tenant_program_runs_on_the_provisioner_config(pulumi_mocks, config_factory, spec_env):
    entries = config_factory(ssh_key_names=("ops",)).tenant_config("alice", spec_env)
    run = pulumi_mocks.run_program(
        TenantProgram("alice", "heavy"), stack="test-tenant-alice",
        config={k: e.value for k, e in entries.items()},
        secret_keys={k for k, e in entries.items() if e.secret}, project="hermes-tenants")

    assert run.outputs["plan"] == "heavy" and run.outputs["server_type"] == "cx33"
    assert {"server_id", "server_name", "private_ip"} <= set(run.outputs)
    [server] = run.servers()
    assert server.inputs["labels"]["tenant"] == "alice"
    assert server.inputs["labels"]["env"] == "test"
    assert spec_env["HERMES_AGENT_TOKEN"] not in str(server.plain_view)


def test_every_agent_setting_in_the_machine_spec_reaches_the_vm_env_file(pulumi_mocks,
                                                                          config_factory,
                                                                          spec_env, tmp_path):
    import json

    import yaml

    from agent.config import AgentConfig
    from infra import tenant_config as tc

    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n")
    env = {**spec_env, "HERMES_TENANT": "alice", "HERMES_CONTROL_URL": "https://control.example.test",
           "HERMES_VISIBILITY_TIMEOUT": "30.0", "HERMES_LLM_CHAIN": "openai_compat,anthropic",
           "HERMES_MODEL": "claude-haiku-4-5", "OPENAI_BASE_URL": "https://openrouter.ai/api/v1",
           "OPENAI_API_KEY": "sk-or-key", "HERMES_OPENAI_MODEL": "qwen/qwen3-8b",
           "HERMES_TZ": "America/Sao_Paulo", "HERMES_BUS_CA_FILE": str(ca)}
    entries = config_factory().tenant_config("alice", env)
    run = pulumi_mocks.run_program(
        TenantProgram("alice", "light"), stack="test-tenant-alice",
        config={k: e.value for k, e in entries.items()},
        secret_keys={k for k, e in entries.items() if e.secret}, project="hermes-tenants")

    [server] = run.servers()
    files = {f["path"]: f for f in yaml.safe_load(server.inputs["userData"])["write_files"]}
    lines = files[tc.AGENT_ENV_PATH]["content"].splitlines()
    vm_env = {k: json.loads(v) for k, v in (line.split("=", 1) for line in lines)}
    assert vm_env == {**env, "HERMES_DATA_DIR": "/var/lib/hermes",
                      "HERMES_BUS_CA_FILE": "/etc/hermes/redis-ca.pem",
                      "HERMES_LOG_FORMAT": "json", "HERMES_METRICS_ADDR": "0.0.0.0",
                      "HERMES_METRICS_PORT": "9464"}
    assert files["/etc/hermes/redis-ca.pem"]["content"] == ca.read_text()
    config = AgentConfig.from_env(vm_env)
    assert config.llm_chain == ("openai_compat", "anthropic")
    assert (config.daily_budget_cents, config.default_tz) == (50, "America/Sao_Paulo")
    for secret in ("sk-or-key", spec_env["ANTHROPIC_API_KEY"], spec_env["HERMES_AGENT_TOKEN"]):
        assert secret not in str(server.plain_view) and secret not in str(run.outputs)
