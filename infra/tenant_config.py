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
from collections.abc import Mapping
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
        env_var: the agent environment variable (``agent/config.py``) this key becomes in
            ``/etc/hermes/agent.env``; ``None`` for keys only the tenant program reads.
    """

    key: str
    description: str
    default: str | None = None
    secret: bool = False
    optional: bool = False
    env_var: str | None = None

    @property
    def name(self) -> str:
        """The key without its namespace (what ``pulumi.Config("hermes")`` takes)."""
        return self.key.split(":", 1)[1]

    @property
    def agent_variable(self) -> str:
        """``env_var`` of a key that has one (every ``AGENT_SETTINGS`` entry).

        Raises:
            ValueError: the key becomes no agent variable.
        """
        if self.env_var is None:
            raise ValueError(f"{self.key} becomes no agent variable")
        return self.env_var


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
BUS_CA_CERT = "hermes:busCaCert"
SSH_HOST_KEY = "hermes:sshHostKey"
SSH_HOST_PUBLIC_KEY = "hermes:sshHostPublicKey"
DAILY_BUDGET_CENTS = "hermes:dailyBudgetCents"

#: The agent's settings, one line each: config key, description, agent variable, secret flag,
#: required or optional.  ``HetznerConfig.tenant_config`` fills them from ``MachineSpec.env``
#: (by ``env_var``) and ``render_agent_env`` writes every one that is set; adding a setting to
#: tenant VMs is one line here.  Variable names are the agent's contract (``agent/config.py``).
AGENT_SETTINGS: tuple[ConfigKey, ...] = (
    ConfigKey(CONTROL_URL, "Control-plane base URL the agent reports to.",
              env_var="HERMES_CONTROL_URL"),
    ConfigKey(BUS_URL, "Redis URL with this tenant's own ACL user and password "
              "(rediss://<user>:<password>@<redis private ip>:6380/0).",
              secret=True, env_var="HERMES_BUS_URL"),
    ConfigKey(AGENT_TOKEN, "Bearer token the agent presents to the control plane.",
              secret=True, env_var="HERMES_AGENT_TOKEN"),
    ConfigKey("hermes:visibilityTimeout", "Seconds before an unacknowledged bus entry is "
              "redelivered.", optional=True, env_var="HERMES_VISIBILITY_TIMEOUT"),
    ConfigKey("hermes:llm", "Primary LLM backend (anthropic, openai_compat, local).",
              optional=True, env_var="HERMES_LLM"),
    ConfigKey("hermes:llmChain", "Comma-separated failover chain of LLM backends, primary first.",
              optional=True, env_var="HERMES_LLM_CHAIN"),
    ConfigKey("hermes:llmPolicy", "quality_first (chain order) or cost_first.",
              optional=True, env_var="HERMES_LLM_POLICY"),
    ConfigKey("hermes:model", "Model id of the primary backend (Anthropic: e.g. a Haiku id).",
              optional=True, env_var="HERMES_MODEL"),
    ConfigKey("hermes:anthropicApiKey", "The tenant's LLM-gateway token (never a provider key: "
              "control/services/llm_gateway.py).", secret=True, optional=True,
              env_var="ANTHROPIC_API_KEY"),
    ConfigKey("hermes:anthropicBaseUrl", "The control plane's LLM gateway (/llm/anthropic).",
              optional=True, env_var="ANTHROPIC_BASE_URL"),
    ConfigKey("hermes:openaiBaseUrl", "OpenAI-compatible endpoint (OpenRouter, vLLM, ...).",
              optional=True, env_var="OPENAI_BASE_URL"),
    ConfigKey("hermes:openaiApiKey", "The tenant's LLM-gateway token.", secret=True,
              optional=True, env_var="OPENAI_API_KEY"),
    ConfigKey("hermes:openaiModel", "Model id for the openai_compat backend.", optional=True,
              env_var="HERMES_OPENAI_MODEL"),
    ConfigKey("hermes:openaiVision", "1 when the openai_compat model can see images.",
              optional=True, env_var="HERMES_OPENAI_VISION"),
    ConfigKey("hermes:transcribeUrl", "OpenAI-compatible /audio/transcriptions root for voice "
              "notes (agent/media/transcribe.py).", optional=True, env_var="HERMES_TRANSCRIBE_URL"),
    ConfigKey("hermes:transcribeApiKey", "The tenant's LLM-gateway token.", secret=True,
              optional=True, env_var="HERMES_TRANSCRIBE_API_KEY"),
    ConfigKey("hermes:transcribeModel", "Transcription model (e.g. whisper-1).", optional=True,
              env_var="HERMES_TRANSCRIBE_MODEL"),
    ConfigKey(DAILY_BUDGET_CENTS, "The plan's paid LLM budget per tenant per UTC day, US cents "
              "(control/services/agent_settings.py).", env_var="HERMES_DAILY_BUDGET_CENTS"),
    ConfigKey("hermes:tz", "The user's IANA time zone.", default="UTC", env_var="HERMES_TZ"),
    ConfigKey("hermes:logFormat", "Agent log lines: json (journal) or console.", default="json",
              env_var="HERMES_LOG_FORMAT"),
    ConfigKey("hermes:metricsPort", "Port of the agent's Prometheus endpoint (agent/metrics.py), "
              "scraped by roles/monitoring over the private network; 0 = off.", default="9464",
              env_var="HERMES_METRICS_PORT"),
    ConfigKey("hermes:metricsAddr", "Bind address of that endpoint: all interfaces, because "
              "the tenant firewall opens no public port for it (agent/metrics.py).",
              default="0.0.0.0", env_var="HERMES_METRICS_ADDR"),
    ConfigKey("hermes:sentryDsn", "Sentry DSN for the agent's unhandled errors; unset = off. "
              "Not a secret: a DSN only lets one submit events (Sentry docs, DSN).",
              optional=True, env_var="SENTRY_DSN"),
)


@dataclass(frozen=True)
class AgentFile:
    """A file the agent needs, carried as the text of a config key and written by cloud-init.

    Attributes:
        key: config key holding the file's text (a ``TENANT_CONFIG_KEYS`` entry).
        env_var: agent variable set to ``path`` when the file is written.
        path: where cloud-init writes it on the VM.
        permissions: octal mode; the agent runs as ``hermes``, so files it reads are 0644.
    """

    key: str
    env_var: str
    path: str
    permissions: str = "0644"


AGENT_FILES: tuple[AgentFile, ...] = (
    AgentFile(BUS_CA_CERT, "HERMES_BUS_CA_FILE", "/etc/hermes/redis-ca.pem"),
)
"""Files cloud-init writes next to the env file (only those whose key is set)."""

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
        ConfigKey(BUS_CA_CERT, "PEM text of the CA that signed Redis's TLS certificate (not "
                  "secret); written to /etc/hermes/redis-ca.pem.", optional=True),
        ConfigKey(SSH_HOST_KEY, "The server's Ed25519 SSH host private key (OpenSSH PEM), made "
                  "and pinned by the control plane (control/providers/hetzner/host_keys.py).",
                  secret=True, optional=True),
        ConfigKey(SSH_HOST_PUBLIC_KEY, "Its public key line (`ssh-ed25519 AAAA... comment`).",
                  optional=True),
        *AGENT_SETTINGS,
    )
}

HOST_KEY_KEYS = (SSH_HOST_KEY, SSH_HOST_PUBLIC_KEY)
"""Keys the tenant program reads for ``render_cloud_init`` besides the agent's settings."""

AGENT_ENV_KEYS: dict[str, ConfigKey] = {k.agent_variable: k for k in AGENT_SETTINGS}
"""Agent variable -> the config key that carries it."""

PLAN_SERVER_TYPE_KEYS: dict[str, str] = {"light": SERVER_TYPE_LIGHT, "heavy": SERVER_TYPE_HEAVY}
"""Plan name -> the config key holding its server type (DESIGN.md, "Plans and sizes")."""

AGENT_ENV_PATH = "/etc/hermes/agent.env"
POOL_TOKEN_PATH = "/etc/hermes/pool.token"
AGENT_PYTHON = "/opt/hermes/venv/bin/python"
"""The base image's interpreter (``agent_image.image_settings``: ``hermes_prefix``/venv)."""
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


LLM_BACKENDS = ("anthropic", "openai_compat", "local")
"""The agent's LLM backends (``agent.config.BACKENDS``)."""


def llm_chain(env: Mapping[str, str]) -> tuple[str, ...]:
    """The LLM failover chain the agent will derive from ``env`` (``AgentConfig.from_env``).

    ``HERMES_LLM_CHAIN`` (comma-separated) wins; else ``HERMES_LLM``; else ``anthropic`` when
    ``ANTHROPIC_API_KEY`` is set, else ``local``.
    """
    chain = tuple(p.strip() for p in env.get("HERMES_LLM_CHAIN", "").split(",") if p.strip())
    if chain:
        return chain
    return (env.get("HERMES_LLM") or ("anthropic" if env.get("ANTHROPIC_API_KEY") else "local"),)


_BACKEND_NEEDS = {"anthropic": "ANTHROPIC_API_KEY", "openai_compat": "OPENAI_BASE_URL"}
"""Backend -> the variable without which the agent refuses to start (``agent/config.py``)."""


def check_llm_settings(env: Mapping[str, str],
                       supported: tuple[str, ...] = LLM_BACKENDS) -> tuple[str, ...]:
    """Check that an agent given ``env`` has a usable LLM chain, before a VM boots with it.

    Args:
        env: the agent's environment variables.
        supported: backends the tenant image installs (``agent_image`` ``hermes_llm_backends``).

    Returns:
        The chain, primary first.

    Raises:
        ValueError: a backend is unknown or not in the image, or lacks its key/endpoint
            (the agent would exit at start-up and systemd would restart it forever).
    """
    chain = llm_chain(env)
    for backend in chain:
        if backend not in LLM_BACKENDS:
            raise ValueError(f"unknown LLM backend {backend!r} (expected one of {LLM_BACKENDS})")
        if backend not in supported:
            raise ValueError(f"LLM backend {backend!r} is not installed in the tenant image "
                             f"(it has {', '.join(supported)})")
        needed = _BACKEND_NEEDS.get(backend)
        if needed and not env.get(needed):
            raise ValueError(f"LLM backend {backend} needs {needed}")
    return chain


def agent_env(tenant: str, settings: Mapping[str, str]) -> dict[str, str]:
    """The agent's environment on a tenant VM.

    Args:
        tenant: the tenant id (``HERMES_TENANT``).
        settings: tenant stack config, config key -> value (secrets resolved), for the keys
            of ``AGENT_SETTINGS`` and ``AGENT_FILES``; unset optional keys are left out.

    Returns:
        Variable -> value: ``HERMES_TENANT``, every set ``AGENT_SETTINGS`` entry,
        ``HERMES_DATA_DIR`` and the path variable of every ``AGENT_FILES`` entry that is set.

    Raises:
        KeyError: a required setting is missing or empty.
    """
    env = {"HERMES_TENANT": tenant}
    for spec in AGENT_SETTINGS:
        value = settings.get(spec.key) or spec.default
        if value:
            env[spec.agent_variable] = value
        elif not spec.optional:
            raise KeyError(f"tenant setting {spec.key} ({spec.env_var}) is required")
    env["HERMES_DATA_DIR"] = AGENT_DATA_DIR
    env.update({f.env_var: f.path for f in AGENT_FILES if settings.get(f.key)})
    return env


def render_agent_env(tenant: str, settings: Mapping[str, str]) -> str:
    """Render ``/etc/hermes/agent.env`` (systemd ``EnvironmentFile=`` syntax).

    Args:
        tenant, settings: as for ``agent_env``.

    Returns:
        The file's text, one double-quoted ``KEY="value"`` line per variable.

    Raises:
        KeyError: a required setting is missing.
        ValueError: a value contains a newline or NUL byte.
    """
    return "".join(_env_line(k, v) + "\n" for k, v in agent_env(tenant, settings).items())


class _BlockDumper(yaml.SafeDumper):
    """SafeDumper that writes multi-line strings as literal blocks (readable file contents)."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


def _host_keys(settings: Mapping[str, str]) -> dict:
    """cloud-init's host key settings (cc_ssh): the pinned pair only, nothing generated."""
    if not settings.get(SSH_HOST_KEY):
        return {}
    return {"ssh_deletekeys": True, "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": settings[SSH_HOST_KEY].rstrip("\n") + "\n",
                         "ed25519_public": settings[SSH_HOST_PUBLIC_KEY].strip()}}


def render_cloud_init(tenant: str, settings: Mapping[str, str]) -> str:
    """Render the tenant server's cloud-init ``user_data`` (``#cloud-config`` YAML).

    It writes ``/etc/hermes/agent.env`` (root-owned, mode 0600: systemd reads it as root before
    the units drop privileges, and the agent units load it with ``EnvironmentFile=``, so no
    secret is ever on a command line) and each set ``AGENT_FILES`` entry (e.g. the Redis CA,
    0644: the agent reads it as ``hermes``), then enables and restarts ``hermes-agent.service``
    and ``hermes-huey.service`` so units the base image started before the files existed pick
    them up.  With ``SSH_HOST_KEY`` set, cloud-init installs that key as the server's only SSH
    host key (``ssh_keys``; ``ssh_genkeytypes: []``; the snapshot's keys are deleted), the one
    the control plane pinned (control/providers/hetzner/host_keys.py).

    Args:
        tenant, settings: as for ``agent_env``.

    Returns:
        The cloud-config document (contains secrets: wrap it in a Pulumi secret).

    Raises:
        KeyError, ValueError: as for ``render_agent_env``.
    """
    files = [
        {
            "path": f.path,
            "owner": "root:root",
            "permissions": f.permissions,
            "content": settings[f.key].rstrip("\n") + "\n",
        }
        for f in AGENT_FILES
        if settings.get(f.key)
    ]
    document = {
        "write_files": [
            {
                "path": AGENT_ENV_PATH,
                "owner": "root:root",
                "permissions": "0600",
                "content": render_agent_env(tenant, settings),
            },
            *files,
        ],
        **_host_keys(settings),
        "runcmd": [
            ["systemctl", "enable", *AGENT_UNITS],
            ["systemctl", "restart", *AGENT_UNITS],
        ],
    }
    return "#cloud-config\n" + yaml.dump(
        document, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
    )


def render_pool_cloud_init(pool_token: str, control_url: str, host_key: Mapping[str, str]) -> str:
    """Render a warm-pool server's cloud-init ``user_data`` (issue 22): no tenant, no secret but
    its one-time pool token.

    It writes the token to ``POOL_TOKEN_PATH`` (root, 0600), installs the pinned SSH host key
    (as ``render_cloud_init``), then runs ``agent.pool_boot``, which polls
    ``{control_url}/api/pool/config`` until the server is claimed and writes the tenant's
    ``/etc/hermes/agent.env`` and files; the agent's units start after it.

    Args:
        pool_token: the one-time token (the control plane stores only its hash).
        control_url: the control plane as servers reach it (``HERMES_AGENT_CONTROL_URL``).
        host_key: ``{SSH_HOST_KEY: private PEM, SSH_HOST_PUBLIC_KEY: public line}``.

    Returns:
        The cloud-config document (contains the token: never log it).
    """
    document = {
        "write_files": [{"path": POOL_TOKEN_PATH, "owner": "root:root", "permissions": "0600",
                         "content": pool_token + "\n"}],
        **_host_keys(host_key),
        "runcmd": [
            [AGENT_PYTHON, "-m", "agent.pool_boot", "--control-url", control_url,
             "--token-file", POOL_TOKEN_PATH, "--write-env", AGENT_ENV_PATH],
            ["systemctl", "enable", *AGENT_UNITS],
            ["systemctl", "restart", *AGENT_UNITS],
        ],
    }
    return "#cloud-config\n" + yaml.dump(
        document, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False
    )
