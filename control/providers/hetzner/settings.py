"""Build ``HetznerConfig`` / ``HetznerProvisioner`` from the control plane's ``Settings``.

``control/settings.py`` stays the only reader of the environment; this module only maps
``Settings`` attributes onto ``HetznerConfig`` fields (``SETTINGS_FIELDS``).  An attribute that
``Settings`` does not have (or that is empty) leaves the ``HetznerConfig`` default in place;
directories default to subdirectories of ``settings.data_dir``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from control.errors import ConfigError
from control.providers.hetzner.api_budget import ApiBudget
from control.providers.hetzner.config import HetznerConfig
from control.providers.hetzner.host_keys import known_hosts_dir
from control.providers.hetzner.provisioner import HetznerProvisioner
from wire.redis_bus import connect

#: HetznerConfig field → Settings attribute.
SETTINGS_FIELDS = {
    "env": "env",
    "control_url": "public_url",
    "hcloud_token": "hcloud_token",
    "hcloud_endpoint": "hcloud_endpoint",
    "location": "hetzner_location",
    "snapshot_id": "hetzner_snapshot_id",
    "network_id": "hetzner_network_id",
    "firewall_label": "hetzner_firewall_label",
    "server_types": "hetzner_server_types",
    "ssh_key_names": "hetzner_ssh_key_names",
    "image_llm_backends": "hetzner_image_llm_backends",
    "ssh_key_path": "hetzner_ssh_key_path",
    "pulumi_backend_url": "pulumi_backend_url",
    "pulumi_passphrase": "pulumi_config_passphrase",
    "pulumi_home": "pulumi_home",
    "s3_endpoint": "archive_s3_endpoint",
    "s3_bucket": "archive_bucket",
    "s3_access_key": "archive_access_key",
    "s3_secret_key": "archive_secret_key",
    "s3_region": "archive_region",
    "drift_delay": "drift_delay",
}


def hetzner_config_from_settings(settings) -> HetznerConfig:
    """Return the ``HetznerConfig`` described by ``settings``.

    Raises:
        ConfigError: a required value is missing or invalid (the message names the fields).
    """
    values: dict[str, Any] = {}
    for field_name, attribute in SETTINGS_FIELDS.items():
        value = getattr(settings, attribute, None)
        if value not in (None, "", (), {}):
            values[field_name] = tuple(value) if isinstance(value, list | tuple) else value
    data = Path(settings.data_dir)
    values.setdefault("archive_dir", str(data / "archives"))
    values.setdefault("lock_dir", str(data / "locks"))
    values.setdefault("state_dir", str(data / "provisioner"))
    values.setdefault("known_hosts_dir", str(known_hosts_dir(settings)))
    try:
        return HetznerConfig(**{k: values.get(k, "") for k in _REQUIRED}, **{
            k: v for k, v in values.items() if k not in _REQUIRED})
    except TypeError as err:
        raise ConfigError(f"invalid Hetzner settings: {err}") from err


_REQUIRED = ("env", "hcloud_token", "snapshot_id", "network_id", "firewall_label", "control_url",
             "pulumi_backend_url", "pulumi_passphrase")


def hetzner_provisioner(settings):
    """Return a production ``HetznerProvisioner`` for ``settings``; with a Redis bus its hcloud
    API budget (``api_budget``) lives there, shared by every worker of the environment.

    Raises:
        ConfigError: the Hetzner settings are incomplete.
    """
    config = hetzner_config_from_settings(settings)
    budget = None
    if settings.bus_url.startswith(("redis://", "rediss://")):
        redis = connect(settings.bus_url, ca_file=settings.bus_ca_file)
        budget = ApiBudget(redis=redis, key=f"hermes:{config.env}:hcloud-budget")
    return HetznerProvisioner(config, budget=budget)
