"""Contract: the config ``HetznerProvisioner`` sets is exactly what ``infra.tenant.build`` reads.

Runs the real inline program (``TenantProgram``) under Pulumi's mocks (tests/infra's helper),
with the stack config produced by ``HetznerConfig.tenant_config``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from control.providers.hetzner_config import TenantProgram

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
