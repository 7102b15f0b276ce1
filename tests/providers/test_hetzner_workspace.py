"""The Automation API boundary: error classification and the production workspace's setup."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from control.errors import ConfigError
from control.providers.hetzner.config import HetznerConfig
from control.providers.hetzner.settings import hetzner_config_from_settings
from control.providers.hetzner.workspace import (
    PulumiStackWorkspace,
    StackOperationError,
    StackRef,
    classify_output,
)

CASES = [
    ("hcloud: limit of 3600 requests per hour reached (rate_limit_exceeded, 1a2b)", "rate_limited"),
    ("error: 429 Too Many Requests", "rate_limited"),
    ("creating server: error within the API (server_error, 9f8e)", "server_error"),
    ("error: 503 Service Unavailable", "server_error"),
    ("error: [409] Conflict: Another update is currently in progress.", "concurrent"),
    ("error: the stack is currently locked by 1 lock(s)", "concurrent"),
    ("server is locked by another action (locked, 77aa)", "concurrent"),
    ("warning: Attempting to deploy or update resources with 1 pending operations", "pending_operations"),
    ("  * urn:pulumi:t::p::hcloud:index/server:Server::agent, interrupted while creating", "pending_operations"),
    ("error: no changes were expected but changes were proposed", "changes"),
    ("error: no stack named 'test-tenant-x' found", "not_found"),
    ("error: an unhandled error occurred: Program exited with non-zero exit code: 1", "failed"),
    ("server type cx21 not found (invalid_input, 12ab)", "failed"),
]


@pytest.mark.parametrize(("output", "kind"), CASES)
def test_pulumi_output_is_classified(output, kind):
    assert classify_output(output) == kind
    assert StackOperationError("s", kind, output).retryable == (
        kind in {"rate_limited", "server_error", "concurrent"})


@pytest.mark.skipif(shutil.which("pulumi") is not None, reason="the Pulumi CLI is installed")
def test_production_workspace_reports_a_missing_pulumi_cli(tmp_path):
    workspace = PulumiStackWorkspace(f"file://{tmp_path}", "pass")
    with pytest.raises(StackOperationError, match="Pulumi CLI is not installed"):
        workspace.list_stacks("hermes-tenants")
    with pytest.raises(StackOperationError, match="Pulumi CLI is not installed"):
        workspace.ensure(StackRef("hermes-tenants", "test-tenant-a", program=lambda: None))


def test_incomplete_config_names_what_is_missing():
    with pytest.raises(ConfigError, match="snapshot_id, network_id"):
        HetznerConfig(env="prod", hcloud_token="t", snapshot_id="", network_id="",
                      firewall_label="hermes-firewall=prod-tenant", control_url="https://c",
                      pulumi_backend_url="file:///s", pulumi_passphrase="p")
    with pytest.raises(ConfigError, match="key=value"):
        HetznerConfig(env="prod", hcloud_token="t", snapshot_id="1", network_id="2",
                      firewall_label="nolabel", control_url="https://c",
                      pulumi_backend_url="file:///s", pulumi_passphrase="p")


def test_config_from_settings_maps_fields_and_defaults_dirs(tmp_path):
    settings = SimpleNamespace(
        data_dir=str(tmp_path), env="prod", public_url="https://hermes.example",
        hcloud_token="tok", hetzner_snapshot_id="123", hetzner_network_id="45",
        hetzner_firewall_label="hermes-firewall=prod-tenant", pulumi_backend_url="file:///x",
        pulumi_config_passphrase="pp", hetzner_ssh_key_names=["ops"], archive_bucket="")
    config = hetzner_config_from_settings(settings)
    assert (config.control_url, config.snapshot_id, config.ssh_key_names) == (
        "https://hermes.example", "123", ("ops",))
    assert config.lock_dir == str(tmp_path / "locks") and config.location == "nbg1"
    assert config.redacted()["hcloud_token"] == "***"


def test_image_llm_backends_come_from_the_environment(tmp_path):
    from control.settings import Settings

    settings = Settings.from_env({
        "HERMES_DATA_DIR": str(tmp_path), "HERMES_ENV": "prod", "HCLOUD_TOKEN": "tok",
        "HETZNER_SNAPSHOT_ID": "1", "HETZNER_NETWORK_ID": "2",
        "HETZNER_FIREWALL_LABEL": "hermes-firewall=prod-tenant",
        "PULUMI_BACKEND_URL": "file:///x", "PULUMI_CONFIG_PASSPHRASE": "pp",
        "HETZNER_IMAGE_LLM_BACKENDS": "anthropic, local"})
    assert hetzner_config_from_settings(settings).image_llm_backends == ("anthropic", "local")
    default = hetzner_config_from_settings(settings.with_overrides(hetzner_image_llm_backends=()))
    assert "local" not in default.image_llm_backends
