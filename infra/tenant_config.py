"""The tenant stack's config contract and the agent's cloud-init, with no Pulumi import.

``HetznerProvisioner`` (Automation API) sets exactly the keys in ``TENANT_CONFIG_KEYS`` on each
tenant stack before running ``infra.tenant.build`` inline; this module is what both sides import,
so it must stay importable without ``pulumi``.

Sources for the rules encoded here:

* Hetzner Cloud API, "Labels": keys and values are at most 63 characters, start and end with an
  alphanumeric character and contain only ``[a-zA-Z0-9._-]`` in between (values may be empty).
* Hetzner Cloud API, "Create a Server": ``name`` must be a valid hostname (RFC 1123 label).
* cloud-init docs, "write_files" and "runcmd" modules.
* systemd.exec(5), ``EnvironmentFile=``: ``KEY=value`` lines, double quotes with backslash escapes.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import yaml

NAMESPACE = "hermes"
"""Config namespace of every tenant stack key (``hermes:<name>``)."""


@dataclass(frozen=True)
class ConfigKey:
    """One tenant stack config key.

    Attributes:
        key: full Pulumi config key, ``hermes:<name>``.
        description: what the value is and where it comes from.
        default: value used when the key is unset; ``None`` means the key is required
            (unless ``optional``).
        secret: set with ``secret=True`` (``ConfigValue(value, secret=True)``); read with
            ``require_secret``.
        optional: the key may be absent and has no default.
    """

    key: str
    description: str
    default: str | None = None
    secret: bool = False
    optional: bool = False

    @property
    def name(self) -> str:
        """The key without its namespace (what ``pulumi.Config("hermes")`` takes)."""
        return self.key.split(":", 1)[1]


ENV = "hermes:env"
LOCATION = "hermes:location"
SNAPSHOT_ID = "hermes:snapshotId"
NETWORK_ID = "hermes:networkId"
FIREWALL_LABEL = "hermes:firewallLabel"
SERVER_TYPE_LIGHT = "hermes:serverTypeLight"
SERVER_TYPE_HEAVY = "hermes:serverTypeHeavy"
SSH_KEY_NAMES = "hermes:sshKeyNames"
CONTROL_URL = "hermes:controlUrl"
BUS_URL = "hermes:busUrl"
AGENT_TOKEN = "hermes:agentToken"

TENANT_CONFIG_KEYS: dict[str, ConfigKey] = {
    k.key: k
    for k in (
        ConfigKey(ENV, "Environment name (staging, prod); becomes the server's `env` label."),
        ConfigKey(LOCATION, "Hetzner location of the tenant server.", default="nbg1"),
        ConfigKey(SNAPSHOT_ID, "Pinned base snapshot id (shared stack output `snapshotId`)."),
        ConfigKey(NETWORK_ID, "Private network id (shared stack output `networkId`)."),
        ConfigKey(
            FIREWALL_LABEL,
            "Label selector of the tenant firewall, e.g. `hermes-firewall=staging-tenant` "
            "(shared stack output `tenantFirewallLabel`); its labels are put on the server.",
        ),
        ConfigKey(SERVER_TYPE_LIGHT, "Hetzner server type of the light plan.", default="cx23"),
        ConfigKey(SERVER_TYPE_HEAVY, "Hetzner server type of the heavy plan.", default="cx33"),
        ConfigKey(SSH_KEY_NAMES, "Comma-separated Hetzner SSH key names.", optional=True),
        ConfigKey(CONTROL_URL, "Control-plane base URL the agent reports to."),
        ConfigKey(
            BUS_URL,
            "Redis URL with this tenant's own ACL user and password "
            "(rediss://<user>:<password>@<redis private ip>:6380/0).",
            secret=True,
        ),
        ConfigKey(
            AGENT_TOKEN, "Bearer token the agent presents to the control plane.", secret=True
        ),
    )
}

PLAN_SERVER_TYPE_KEYS: dict[str, str] = {"light": SERVER_TYPE_LIGHT, "heavy": SERVER_TYPE_HEAVY}
"""Plan name -> the config key holding its server type (DESIGN.md, "Plans and sizes")."""

AGENT_ENV_PATH = "/etc/hermes/agent.env"
AGENT_DATA_DIR = "/var/lib/hermes"
AGENT_UNITS = ("hermes-agent.service", "hermes-huey.service")
"""systemd units of the base image: inbox listener and Huey consumer (agent_image/)."""

_LABEL_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_HOSTNAME_BAD = re.compile(r"[^a-z0-9-]+")
_ENV_NAME_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")


def check_label_value(value: str, what: str = "label value") -> str:
    """Return ``value`` if Hetzner accepts it as a label value, else raise ``ValueError``."""
    if not _LABEL_RE.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid Hetzner label value "
            "(<= 63 chars of [a-zA-Z0-9._-], alphanumeric at both ends)"
        )
    return value


def parse_label_selector(selector: str) -> dict[str, str]:
    """Turn an equality label selector ``"k=v[,k2=v2]"`` into the labels that satisfy it.

    Raises:
        ValueError: empty selector, a term that is not ``key=value`` (``!=``, ``in (...)`` and
            bare-key terms select but cannot be satisfied by setting labels), or invalid labels.
    """
    labels: dict[str, str] = {}
    for term in (t.strip() for t in selector.split(",")):
        key, sep, value = term.partition("=")
        if not sep or key.endswith("!") or value.startswith("="):
            raise ValueError(f"label selector term {term!r} is not of the form key=value")
        labels[check_label_value(key.strip(), "label key")] = check_label_value(value.strip())
    if not labels or "" in labels:
        raise ValueError(f"empty label selector {selector!r}")
    return labels


def server_name(env: str, tenant_id: str) -> str:
    """Hetzner server name for a tenant: ``hermes-<env>-<tenant>`` as an RFC 1123 hostname.

    Tenant ids that are not already hostname-safe are lower-cased, runs of other characters
    become ``-`` and an 8-hex-digit SHA-1 suffix of the original id keeps names unique.
    """
    base = f"hermes-{env}-{tenant_id}"
    safe = _HOSTNAME_BAD.sub("-", base.lower()).strip("-")
    if safe != base:
        safe = f"{safe[:54].rstrip('-')}-{hashlib.sha1(tenant_id.encode()).hexdigest()[:8]}"
    return safe[:63]


def _env_line(name: str, value: str) -> str:
    if not _ENV_NAME_RE.match(name):
        raise ValueError(f"invalid environment variable name {name!r}")
    if any(c in value for c in "\n\r\0"):
        raise ValueError(f"{name} must not contain newlines or NUL bytes")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{name}="{escaped}"'


def render_agent_env(values: dict[str, str]) -> str:
    """Render ``/etc/hermes/agent.env`` (systemd ``EnvironmentFile=`` syntax).

    Args:
        values: ``tenant``, ``bus_url``, ``control_url``, ``agent_token`` (all strings);
            optional ``data_dir`` (default ``/var/lib/hermes``).

    Returns:
        The file's text, one double-quoted ``KEY="value"`` line per variable.

    Raises:
        KeyError: a required value is missing.
        ValueError: a value contains a newline or NUL byte.
    """
    env = {
        "HERMES_TENANT": values["tenant"],
        "HERMES_BUS_URL": values["bus_url"],
        "HERMES_CONTROL_URL": values["control_url"],
        "HERMES_AGENT_TOKEN": values["agent_token"],
        "HERMES_DATA_DIR": values.get("data_dir") or AGENT_DATA_DIR,
    }
    return "".join(_env_line(k, v) + "\n" for k, v in env.items())


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings as literal blocks (readable file contents)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def render_cloud_init(values: dict[str, str]) -> str:
    """Render the tenant server's cloud-init ``user_data`` (``#cloud-config`` YAML).

    It writes ``/etc/hermes/agent.env`` (root-owned, mode 0600; systemd reads it as root before
    the units drop privileges), then enables and restarts ``hermes-agent.service`` and
    ``hermes-huey.service`` so units the base image started before the file existed pick it up.

    Args:
        values: as for ``render_agent_env``.

    Returns:
        The cloud-config document (contains secrets: wrap it in a Pulumi secret).
    """
    document = {
        "write_files": [
            {
                "path": AGENT_ENV_PATH,
                "owner": "root:root",
                "permissions": "0600",
                "content": render_agent_env(values),
            }
        ],
        "runcmd": [
            ["systemctl", "enable", *AGENT_UNITS],
            ["systemctl", "restart", *AGENT_UNITS],
        ],
    }
    return "#cloud-config\n" + yaml.dump(
        document, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
    )
