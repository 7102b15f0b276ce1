"""Tenant secrets: they reach the VM only inside cloud-init's root-only env file, never a
stack output or a plain resource view, and what cloud-init writes is an environment the agent
accepts (parsed, written into a directory, loaded by ``agent.config`` and ``agent.main``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

HERE = Path(__file__).resolve().parent
for _path in (str(HERE), str(HERE.parents[1])):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pulumi_mocks as pm

from agent.config import AgentConfig
from infra import tenant_config as tc

SECRETS = (pm.BUS_URL, "bus-password-7f3a9c", pm.AGENT_TOKEN, pm.ANTHROPIC_API_KEY,
           pm.OPENAI_API_KEY)


@pytest.fixture(scope="module")
def shared() -> pm.ProgramRun:
    return pm.run_shared_stack("staging")


@pytest.fixture(scope="module")
def tenant(shared) -> pm.ProgramRun:
    return pm.run_tenant(shared, "t42", "light")


def user_data(run: pm.ProgramRun) -> str:
    (server,) = run.servers()
    return server.inputs["userData"]


def write_files(document: dict, root: Path) -> dict[str, Path]:
    """Do what cloud-init's write_files does, under ``root``; return path -> written file."""
    written = {}
    for entry in document["write_files"]:
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(entry["content"])
        os.chmod(target, int(entry["permissions"], 8))
        written[entry["path"]] = target
    return written


def read_env_file(path: Path) -> dict[str, str]:
    """Parse ``KEY="value"`` lines (systemd EnvironmentFile=, double quotes, backslash escapes)."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line)
    return {key: json.loads(value) for key, value in pairs}


def test_no_stack_output_or_plain_resource_view_carries_a_secret(tenant):
    exported = json.dumps(tenant.outputs)
    plain = json.dumps([r.plain_view for r in tenant.resources])
    for secret in SECRETS:
        assert secret not in exported
        assert secret not in plain
    (server,) = tenant.servers()
    assert server.plain_view["userData"] == pm.REDACTED


def test_secret_values_appear_only_in_the_root_only_env_file(tenant):
    document = yaml.safe_load(user_data(tenant))
    env_entry, *others = document["write_files"]
    assert env_entry["path"] == tc.AGENT_ENV_PATH
    assert (env_entry["owner"], env_entry["permissions"]) == ("root:root", "0600")
    for secret in SECRETS:
        assert secret in env_entry["content"]
    rest = json.dumps({**document, "write_files": others})
    for secret in SECRETS:
        assert secret not in rest


def test_redis_ca_is_written_world_readable_and_named_for_the_agent(tenant, tmp_path):
    document = yaml.safe_load(user_data(tenant))
    ca_entry = next(f for f in document["write_files"] if f["path"] == "/etc/hermes/redis-ca.pem")
    assert ca_entry["permissions"] == "0644"
    written = write_files(document, tmp_path)
    assert written["/etc/hermes/redis-ca.pem"].read_text() == pm.BUS_CA_CERT
    env = read_env_file(written[tc.AGENT_ENV_PATH])
    assert env["HERMES_BUS_CA_FILE"] == "/etc/hermes/redis-ca.pem"


def test_tenant_without_ca_gets_no_ca_file_and_no_ca_variable(shared):
    config, secrets = pm.tenant_stack_config(shared)
    del config[tc.BUS_CA_CERT]
    from infra import tenant

    run = pm.run_program(lambda: tenant.build("t42", "light"), stack="tenant-t42",
                         config=config, secret_keys=secrets, project="hermes-tenants")
    document = yaml.safe_load(user_data(run))
    assert [f["path"] for f in document["write_files"]] == [tc.AGENT_ENV_PATH]
    assert "HERMES_BUS_CA_FILE" not in document["write_files"][0]["content"]


def test_agent_accepts_the_environment_cloud_init_writes(tenant, tmp_path):
    written = write_files(yaml.safe_load(user_data(tenant)), tmp_path)
    config = AgentConfig.from_env(read_env_file(written[tc.AGENT_ENV_PATH]))

    assert config.tenant == "t42"
    assert config.llm_chain == ("anthropic", "openai_compat")
    assert config.anthropic_api_key == pm.ANTHROPIC_API_KEY
    assert config.openai_base_url == "https://openrouter.ai/api/v1"
    assert config.daily_budget_cents == 50
    assert config.default_tz == "Europe/Berlin"
    assert config.bus_url == pm.BUS_URL
    assert config.data_dir == "/var/lib/hermes"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping())
    except redis.RedisError:
        return False


def test_agent_process_starts_on_the_rendered_environment(tenant, tmp_path):
    """``python -m agent.main listen`` (the image's hermes-agent.service command) reaches ready
    on the env file's values; only what points at the VM's disk and private network is moved
    to this machine: the data dir, the CA path and the bus (local Redis, no TLS)."""
    if not _redis_up():
        pytest.skip("needs the local Redis on 127.0.0.1:6379")
    written = write_files(yaml.safe_load(user_data(tenant)), tmp_path / "root")
    env = read_env_file(written[tc.AGENT_ENV_PATH])
    data = tmp_path / "data"
    env.update(HERMES_DATA_DIR=str(data), HERMES_BUS_URL="redis://127.0.0.1:6379/14",
               HERMES_BUS_CA_FILE=str(written["/etc/hermes/redis-ca.pem"]))
    keep = {k: os.environ[k] for k in ("PATH", "HOME", "LANG") if k in os.environ}
    proc = subprocess.Popen([sys.executable, "-m", "agent.main", "listen"], cwd=pm.REPO,
                            env={**keep, "HF_HUB_OFFLINE": "1", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    ready = False
    try:
        while not ready and proc.poll() is None:
            assert time.monotonic() < deadline, "agent not ready within 90 s"
            ready = (data / "agent.ready").exists()
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=60)[0]
    assert ready, output
    assert proc.returncode == 0, output
    for secret in (pm.ANTHROPIC_API_KEY, pm.OPENAI_API_KEY, pm.AGENT_TOKEN):
        assert secret not in output
