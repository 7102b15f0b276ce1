"""Fixtures for the Hetzner provisioner tests: the hcloud API stand-in, the Pulumi workspace
stand-in, moto's S3 server on loopback, and a provisioner wired to all three."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from providers_workspace_standin import FakeStackWorkspace
from support.moto_s3 import ACCESS_KEY, REGION, SECRET_KEY, moto_s3_server, new_bucket

from control.providers.hetzner.archive import LocalDirectoryArchiver, LocalDirectoryRestorer
from control.providers.hetzner.config import HetznerConfig
from infra.hetzner_api import make_client
from standins.hcloud_api import HcloudStandin


class Sleeps(list):
    """A ``sleep`` replacement that records the requested pauses, seconds."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def hcloud_api():
    with HcloudStandin() as api:
        yield api


@pytest.fixture
def hcloud_client(hcloud_api):
    # A tiny action poll interval: the stand-in finishes an action on its first read.
    return make_client(hcloud_api.token, hcloud_api.url, poll_interval=0.01)


@pytest.fixture
def workspace(hcloud_api):
    return FakeStackWorkspace(hcloud_api)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def agent_data(tmp_path):
    """Root of per-tenant agent data directories (``<root>/<tenant>``)."""
    root = tmp_path / "agents"
    root.mkdir()
    return root


def make_config(tmp_path, **overrides) -> HetznerConfig:
    values = {
        "env": "test", "hcloud_token": "standin-token", "snapshot_id": "424242",
        "network_id": "77", "firewall_label": "hermes-firewall=test-tenant",
        "control_url": "https://control.example.test",
        "pulumi_backend_url": f"file://{tmp_path}/state", "pulumi_passphrase": "correct horse",
        "location": "nbg1", "archive_dir": str(tmp_path / "archives"),
        "lock_dir": str(tmp_path / "locks"), "state_dir": str(tmp_path / "provisioner"),
        "known_hosts_dir": str(tmp_path / "known_hosts"), "lock_timeout": 5.0, "drift_delay": 3.0,
    }
    return HetznerConfig(**{**values, **overrides})


@pytest.fixture
def config_factory(tmp_path):
    """Build a test ``HetznerConfig``; keyword overrides replace fields."""
    return lambda **overrides: make_config(tmp_path, **overrides)


@pytest.fixture
def make_provisioner(tmp_path, workspace, hcloud_client, sleeps, agent_data):
    """Build a ``HetznerProvisioner`` on the stand-ins; keyword overrides go to the config."""
    from control.providers.hetzner.provisioner import HetznerProvisioner

    def build(store=None, archiver=None, restorer=None, **overrides):
        return HetznerProvisioner(
            make_config(tmp_path, **overrides), workspace=workspace, hcloud_client=hcloud_client,
            store=store, archiver=archiver or LocalDirectoryArchiver(agent_data),
            restorer=restorer or LocalDirectoryRestorer(agent_data), sleep=sleeps,
        )

    return build


@pytest.fixture
def spec_env():
    """``MachineSpec.env`` as provisioning builds it (``agent_settings.agent_env_for``)."""
    return {"HERMES_BUS_URL": "rediss://tenant-a:s3cret@10.0.0.3:6380/0",
            "HERMES_AGENT_TOKEN": "agent-token-abc", "HERMES_LLM": "anthropic",
            "ANTHROPIC_API_KEY": "sk-ant-test-key-31d9", "HERMES_DAILY_BUDGET_CENTS": "50",
            "HERMES_TZ": "UTC"}


@pytest.fixture(scope="session")
def moto_s3_endpoint():
    """moto's real S3 server on a free loopback port, for the whole session."""
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_store(moto_s3_endpoint):
    """An ``S3ObjectStore`` on a fresh bucket of the moto server."""
    from control.providers.archive import S3ObjectStore

    bucket = new_bucket(moto_s3_endpoint, "archives", length=16)
    # A 5 MiB part size (S3's minimum) makes multi-part uploads cheap to exercise.
    return S3ObjectStore(bucket, endpoint_url=moto_s3_endpoint, access_key=ACCESS_KEY,
                         secret_key=SECRET_KEY, region=REGION, part_size=5 * 1024 * 1024)
