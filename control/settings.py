"""Control-plane configuration: the only module that reads the environment.

``Settings.from_env()`` reads every variable once; everything else receives a ``Settings``.
Defaults make the embedded mode work with no servers and no keys (DESIGN.md, "Defaults that
make it run anywhere").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from control.errors import ConfigError
from control.services.agent_settings import DEFAULT_PLAN_BUDGET_CENTS
from wire import logs


def _default_data_dir() -> str:
    return str(Path.home() / ".hermes")


# The Slack app's bot scopes (https://docs.slack.dev/reference/scopes): app_mention events,
# chat.postMessage/update, the /hermes command, DM events (im:history) and opening DMs
# (conversations.open needs im:write; im:read reads their metadata).
SLACK_SCOPES = ("app_mentions:read", "chat:write", "commands", "im:history", "im:read", "im:write")


@dataclass(frozen=True)
class Settings:
    """Every knob of the control plane.

    Attributes (environment variable in brackets, default after ``=``):
        data_dir: [HERMES_DATA_DIR] = ``~/.hermes``; database, bus, queue and agent data.
        database_url: [DATABASE_URL] = ``sqlite:///<data_dir>/control.db``; ``postgresql://`` for Postgres.
        bus_url: [HERMES_BUS_URL, or REDIS_URL when HERMES_BUS=redis] = ``sqlite:///<data_dir>/bus.db``.
        bus_ca_file: [HERMES_BUS_CA_FILE] = ``""``; PEM CA that signed the Redis server certificate,
            used to verify ``rediss://`` bus URLs (issued by ``roles/redis``; ``""`` = system CAs).
        port: [HERMES_PORT] = 8000.
        public_url: [HERMES_PUBLIC_URL] = ``http://127.0.0.1:<port>``; how agents reach us.
        stripe_webhook_secret: [STRIPE_WEBHOOK_SECRET] = ``""`` (every Stripe webhook is refused).
        stripe_price_plans: [STRIPE_PRICE_PLANS] = ``{}``; ``price_id=plan,...`` fallback map.
        stripe_tolerance: seconds a Stripe signature timestamp may be old (Stripe's SDK default 300).
        telegram_bot_token: [TELEGRAM_BOT_TOKEN] = ``""``.
        telegram_bot_username: [TELEGRAM_BOT_USERNAME] = ``HermesMaxBot``; used in deep links.
        telegram_webhook_secret: [TELEGRAM_WEBHOOK_SECRET] = ``""`` (every update is refused).
        telegram_api_base: [TELEGRAM_API_BASE] = ``https://api.telegram.org``.
        discord_public_key: [DISCORD_PUBLIC_KEY] = ``""``; the application's Ed25519 public key
            (hex) that verifies interactions (every interaction is refused without it).
        discord_bot_token: [DISCORD_BOT_TOKEN] = ``""``; the bot's token (REST and Gateway).
        discord_application_id: [DISCORD_APPLICATION_ID] = ``""``; the application's id.
        discord_api_base: [DISCORD_API_BASE] = ``https://discord.com/api/v10``.
        discord_gateway_url: [DISCORD_GATEWAY_URL] = ``""``; Gateway URL override (empty:
            ``GET /gateway/bot`` tells it).
        link_token_ttl: [HERMES_LINK_TOKEN_TTL] = 86400 seconds (24 h, issue #2).
        edit_interval: [HERMES_EDIT_INTERVAL] = 1.0 second between edits of one chat's message.
        provisioner: [HERMES_PROVISIONER] = ``local`` | ``hetzner``.
        agent_env: LLM settings handed to every agent, the variables in ``AGENT_ENV_KEYS``
            (only those that are set; names as in ``agent/config.py``).
        plan_budget_cents: [HERMES_PLAN_BUDGET_CENTS] = ``light=50,heavy=150``; each plan's
            paid LLM budget per tenant per UTC day, US cents (justified against the plan prices
            in ``control/services/agent_settings.py``).
        default_tz: [HERMES_DEFAULT_TZ, else HERMES_TZ] = ``UTC``; IANA time zone given to
            agents as HERMES_TZ (a zone the user sets on the dashboard overrides it).
        visibility_timeout: [HERMES_VISIBILITY_TIMEOUT] = 30 seconds before a bus entry is redelivered.
        env: [HERMES_ENV] = ``local``; the label ``env`` on every machine.
        huey_immediate: run Huey tasks inline (tests only).
        ready_timeout: [HERMES_READY_TIMEOUT] = 600 seconds from the provider saying "running" to
            the agent's lifecycle ``ready`` event.  A Hetzner server from a snapshot boots in
            about a minute, then cloud-init writes the env file and the agent loads its models;
            10 minutes leaves room for a slow location without hiding a broken agent for long.
        heartbeat_interval: [HERMES_HEARTBEAT_INTERVAL] = 30 seconds between agent heartbeats
            (handed to agents, so both sides agree).
        missed_heartbeats: [HERMES_MISSED_HEARTBEATS] = 3 intervals without a lifecycle event
            before a ready machine is ``unhealthy``.
        provision_attempts: [HERMES_PROVISION_ATTEMPTS] = 3 provisioning attempts (first
            included) on transient failures (Hetzner 429/5xx, ready timeout) before ``failed``.
        provision_retry_delay: [HERMES_PROVISION_RETRY_DELAY] = 60 seconds before the second
            attempt, doubled for each later one.
        backup_retention_days: [HERMES_BACKUP_RETENTION_DAYS] = 14 UTC days of nightly backups
            kept (``control/services/backups.py``: the newest backup of each day).
        backup_hour: [HERMES_BACKUP_HOUR] = 3; the UTC hour (0-23) of the nightly backup run.
        metrics_multiproc_dir: [PROMETHEUS_MULTIPROC_DIR] = ``""``; prometheus_client's
            multiprocess directory (it reads the variable itself): set under gunicorn so
            ``/metrics`` adds up every worker; ``""`` = one process, in-memory metrics.
        sentry_dsn: [SENTRY_DSN] = ``""``; Sentry project DSN for unhandled errors (``""`` = off);
            also handed to the agents (``AGENT_ENV_KEYS``), whose events say ``environment=agent``.
        log_format: [HERMES_LOG_FORMAT] = ``console`` (readable lines) or ``json`` (one JSON
            object per line: production, ``roles/control``); ``wire.logs``.  Also handed to the
            agents this control plane starts (``AGENT_ENV_KEYS``), so both sides log alike.
        secret_key: [HERMES_SECRET_KEY] = ``""``; signs web sessions and CSRF tokens.  ``""``
            in local mode: a random key is created once in ``<data_dir>/secret_key`` (0600);
            production (``HERMES_ENV`` not ``local``) refuses to start without it.
        stripe_secret_key: [STRIPE_SECRET_KEY] = ``""``; Stripe API key for Checkout, the
            customer portal and invoices (``""``: the billing pages say billing is not set up).
        stripe_api_base: [STRIPE_API_BASE] = ``""`` (the SDK's ``https://api.stripe.com``); the
            local Stripe stand-in's URL in ``hermes demo`` and tests.
        stripe_price_light / stripe_price_heavy: [STRIPE_PRICE_LIGHT] / [STRIPE_PRICE_HEAVY] =
            ``""``; the recurring Price ids Checkout sells for each plan.
        grace_days: [HERMES_GRACE_DAYS] = 7 days a canceled tenant's agent stays paused, data
            kept, before its machine is archived and destroyed (issue #10).
        archive_retention_days: [HERMES_ARCHIVE_RETENTION_DAYS] = 30 days an archive is kept;
            resubscribing within them restores it onto the new machine.
        smtp_url: [SMTP_URL] = ``""``; ``smtp://`` or ``smtps://user:password@host:port`` (add
            ``?starttls=1`` for STARTTLS).  ``""``: mail stays in the outbox table, which
            ``hermes serve`` prints (local mode).
        mail_from: [HERMES_MAIL_FROM] = ``Hermes Max <no-reply@localhost>``; the From header.
        rate_limit_storage: [HERMES_RATE_LIMIT_STORAGE] = ``memory://``; flask-limiter storage
            URI; production uses ``redis://`` so every gunicorn worker shares the counters.
        encryption_keys: [HERMES_ENCRYPTION_KEYS] = ``()``; comma-separated Fernet keys, newest
            first, encrypting third-party credentials at rest (``control/services/secrets_box.py``).
            Empty in local mode: a key is created once in ``<data_dir>/encryption_key`` (0600).
        composio_api_key: [COMPOSIO_API_KEY] = ``""``; the Composio project API key behind the
            users' connections (``control/services/composio_client.py``; ``""``: the
            connections API answers 503 "not set up").
        composio_api_base: [COMPOSIO_API_BASE] = ``https://backend.composio.dev``; Composio's API
            (the local stand-in ``standins/composio_api.py`` in tests).
        composio_webhook_secret: [COMPOSIO_WEBHOOK_SECRET] = ``""``; the project's webhook
            signing secret (``""``: every Composio webhook is refused, 401).
        proxy_hops: [HERMES_PROXY_HOPS] = 0; reverse proxies in front of the app whose
            ``X-Forwarded-For``/``-Proto`` are trusted (werkzeug ``ProxyFix``).  1 behind
            the control role's nginx, so rate limits key on the client's address, not nginx's.
        slack_signing_secret: [SLACK_SIGNING_SECRET] = ``""``; verifies every Slack request (v0
            signature, ``control/web/slack.py``); ``""``: Slack is off (its webhooks answer 401).
        slack_client_id / slack_client_secret: [SLACK_CLIENT_ID] / [SLACK_CLIENT_SECRET] =
            ``""``; the Slack app's OAuth credentials for ``/slack/install`` (``""``: no install).
        slack_api_base: [SLACK_API_BASE] = ``https://slack.com/api``; the Web API base URL (the
            local stand-in's in tests and ``hermes demo``).
        slack_scopes: [SLACK_SCOPES] = ``SLACK_SCOPES``, comma-separated bot scopes asked for at
            install: mentions, posting, ``/hermes`` and DMs.

    Production machines (``HERMES_PROVISIONER=hetzner``; see ``control/providers/hetzner/config.py``):
        hcloud_token [HCLOUD_TOKEN], hcloud_endpoint [HCLOUD_ENDPOINT], hetzner_location
        [HETZNER_LOCATION], hetzner_snapshot_id [HETZNER_SNAPSHOT_ID], hetzner_network_id
        [HETZNER_NETWORK_ID], hetzner_firewall_label [HETZNER_FIREWALL_LABEL],
        hetzner_server_types [HETZNER_SERVER_TYPES, ``light=cx23,heavy=cx33``],
        hetzner_ssh_key_names [HETZNER_SSH_KEY_NAMES, comma-separated],
        hetzner_image_llm_backends [HETZNER_IMAGE_LLM_BACKENDS, comma-separated, default
        ``anthropic,openai_compat``: the LLM backends the pinned snapshot installs,
        agent_image ``hermes_llm_backends``], hetzner_ssh_key_path
        [HETZNER_SSH_KEY_PATH], pulumi_backend_url [PULUMI_BACKEND_URL],
        pulumi_config_passphrase [PULUMI_CONFIG_PASSPHRASE], pulumi_home [PULUMI_HOME],
        archive_s3_endpoint [ARCHIVE_S3_ENDPOINT], archive_bucket [ARCHIVE_BUCKET],
        archive_access_key [ARCHIVE_ACCESS_KEY], archive_secret_key [ARCHIVE_SECRET_KEY],
        archive_region [ARCHIVE_REGION], drift_delay [HERMES_DRIFT_DELAY] seconds between
        stack previews in ``hermes drift``.
    """

    data_dir: str = field(default_factory=_default_data_dir)
    database_url: str = ""
    bus_url: str = ""
    bus_ca_file: str = ""
    port: int = 8000
    public_url: str = ""
    stripe_webhook_secret: str = ""
    stripe_price_plans: dict[str, str] = field(default_factory=dict)
    stripe_tolerance: int = 300
    telegram_bot_token: str = ""
    telegram_bot_username: str = "HermesMaxBot"
    telegram_webhook_secret: str = ""
    telegram_api_base: str = "https://api.telegram.org"
    discord_public_key: str = ""
    discord_bot_token: str = ""
    discord_application_id: str = ""
    discord_api_base: str = "https://discord.com/api/v10"
    discord_gateway_url: str = ""
    link_token_ttl: int = 86400
    edit_interval: float = 1.0
    provisioner: str = "local"
    agent_env: dict[str, str] = field(default_factory=dict)
    plan_budget_cents: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_PLAN_BUDGET_CENTS))
    default_tz: str = "UTC"
    visibility_timeout: float = 30.0
    env: str = "local"
    huey_immediate: bool = False
    ready_timeout: float = 600.0
    heartbeat_interval: float = 30.0
    missed_heartbeats: int = 3
    provision_attempts: int = 3
    provision_retry_delay: float = 60.0
    backup_retention_days: int = 14
    backup_hour: int = 3
    metrics_multiproc_dir: str = ""
    sentry_dsn: str = ""
    log_format: str = "console"
    hcloud_token: str = ""
    hcloud_endpoint: str = ""
    hetzner_location: str = ""
    hetzner_snapshot_id: str = ""
    hetzner_network_id: str = ""
    hetzner_firewall_label: str = ""
    hetzner_server_types: dict[str, str] = field(default_factory=dict)
    hetzner_ssh_key_names: tuple[str, ...] = ()
    hetzner_image_llm_backends: tuple[str, ...] = ()
    hetzner_ssh_key_path: str = ""
    pulumi_backend_url: str = ""
    pulumi_config_passphrase: str = ""
    pulumi_home: str = ""
    archive_s3_endpoint: str = ""
    archive_bucket: str = ""
    archive_access_key: str = ""
    archive_secret_key: str = ""
    archive_region: str = ""
    drift_delay: float = 5.0
    secret_key: str = ""
    stripe_secret_key: str = ""
    stripe_api_base: str = ""
    stripe_price_light: str = ""
    stripe_price_heavy: str = ""
    grace_days: int = 7
    archive_retention_days: int = 30
    smtp_url: str = ""
    mail_from: str = "Hermes Max <no-reply@localhost>"
    rate_limit_storage: str = "memory://"
    proxy_hops: int = 0
    encryption_keys: tuple[str, ...] = ()
    slack_signing_secret: str = ""
    slack_client_id: str = ""
    slack_client_secret: str = ""
    slack_api_base: str = "https://slack.com/api"
    slack_scopes: tuple[str, ...] = SLACK_SCOPES
    composio_api_key: str = ""
    composio_api_base: str = "https://backend.composio.dev"
    composio_webhook_secret: str = ""

    def __post_init__(self):
        data = str(Path(self.data_dir).expanduser().resolve())
        object.__setattr__(self, "data_dir", data)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data}/control.db")
        if not self.bus_url:
            object.__setattr__(self, "bus_url", f"sqlite:///{data}/bus.db")
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://127.0.0.1:{self.port}")
        if self.provisioner not in ("local", "hetzner"):
            raise ConfigError(f"HERMES_PROVISIONER must be local or hetzner, not {self.provisioner!r}")
        _check_agent_settings(self)
        if self.backup_retention_days < 1 or not 0 <= self.backup_hour <= 23:
            raise ConfigError(f"HERMES_BACKUP_RETENTION_DAYS must be >= 1 and HERMES_BACKUP_HOUR "
                              f"0-23, not {self.backup_retention_days} and {self.backup_hour}")
        if self.grace_days < 0 or self.archive_retention_days < 1:
            raise ConfigError(f"HERMES_GRACE_DAYS must be >= 0 and HERMES_ARCHIVE_RETENTION_DAYS "
                              f">= 1, not {self.grace_days} and {self.archive_retention_days}")

    @property
    def stripe_prices(self) -> dict[str, str]:
        """``{plan: price_id}`` that Checkout sells (only the plans with a configured price)."""
        return {plan: price for plan, price in (("light", self.stripe_price_light),
                                                ("heavy", self.stripe_price_heavy)) if price}

    @property
    def huey_path(self) -> str:
        """Path of the SqliteHuey queue file."""
        return str(Path(self.data_dir) / "queue.db")

    @property
    def agents_dir(self) -> str:
        """Directory holding one data directory per local agent."""
        return str(Path(self.data_dir) / "agents")

    def with_overrides(self, **changes) -> Settings:
        """Return a copy with ``changes`` applied (used by tests and ``hermes demo``)."""
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises:
            ConfigError: a variable has an invalid value.
        """
        env = os.environ if environ is None else environ
        try:
            port = int(env.get("HERMES_PORT", "8000"))
            ttl = int(env.get("HERMES_LINK_TOKEN_TTL", "86400"))
            edit_interval = float(env.get("HERMES_EDIT_INTERVAL", "1.0"))
            visibility = float(env.get("HERMES_VISIBILITY_TIMEOUT", "30"))
            drift_delay = float(env.get("HERMES_DRIFT_DELAY", "5"))
            proxy_hops = int(env.get("HERMES_PROXY_HOPS", "0"))
            lifecycle_days = {"grace_days": int(env.get("HERMES_GRACE_DAYS", "7")),
                              "archive_retention_days":
                                  int(env.get("HERMES_ARCHIVE_RETENTION_DAYS", "30"))}
            backups = {"backup_retention_days": int(env.get("HERMES_BACKUP_RETENTION_DAYS", "14")),
                       "backup_hour": int(env.get("HERMES_BACKUP_HOUR", "3"))}
            lifecycle = {"ready_timeout": float(env.get("HERMES_READY_TIMEOUT", "600")),
                         "heartbeat_interval": float(env.get("HERMES_HEARTBEAT_INTERVAL", "30")),
                         "missed_heartbeats": int(env.get("HERMES_MISSED_HEARTBEATS", "3")),
                         "provision_attempts": int(env.get("HERMES_PROVISION_ATTEMPTS", "3")),
                         "provision_retry_delay": float(env.get("HERMES_PROVISION_RETRY_DELAY", "60"))}
        except ValueError as exc:
            raise ConfigError(f"invalid numeric setting: {exc}") from exc
        return cls(
            data_dir=env.get("HERMES_DATA_DIR") or _default_data_dir(),
            database_url=env.get("DATABASE_URL", ""),
            bus_url=_bus_url(env),
            bus_ca_file=env.get("HERMES_BUS_CA_FILE", ""),
            port=port,
            public_url=env.get("HERMES_PUBLIC_URL", ""),
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET", ""),
            stripe_price_plans=_parse_price_plans(env.get("STRIPE_PRICE_PLANS", "")),
            telegram_bot_token=env.get("TELEGRAM_BOT_TOKEN", ""),
            telegram_bot_username=env.get("TELEGRAM_BOT_USERNAME", "HermesMaxBot"),
            telegram_webhook_secret=env.get("TELEGRAM_WEBHOOK_SECRET", ""),
            telegram_api_base=env.get("TELEGRAM_API_BASE", "https://api.telegram.org").rstrip("/"),
            discord_public_key=env.get("DISCORD_PUBLIC_KEY", ""),
            discord_bot_token=env.get("DISCORD_BOT_TOKEN", ""),
            discord_application_id=env.get("DISCORD_APPLICATION_ID", ""),
            discord_api_base=env.get("DISCORD_API_BASE", "https://discord.com/api/v10").rstrip("/"),
            discord_gateway_url=env.get("DISCORD_GATEWAY_URL", ""),
            link_token_ttl=ttl,
            edit_interval=edit_interval,
            provisioner=env.get("HERMES_PROVISIONER", "local"),
            agent_env={k: env[k] for k in AGENT_ENV_KEYS if env.get(k)},
            plan_budget_cents=_parse_budgets(env.get("HERMES_PLAN_BUDGET_CENTS", "")),
            default_tz=env.get("HERMES_DEFAULT_TZ") or env.get("HERMES_TZ") or "UTC",
            visibility_timeout=visibility,
            env=env.get("HERMES_ENV", "local"),
            drift_delay=drift_delay,
            **lifecycle,
            **lifecycle_days,
            **backups,
            secret_key=env.get("HERMES_SECRET_KEY", ""),
            stripe_secret_key=env.get("STRIPE_SECRET_KEY", ""),
            stripe_api_base=env.get("STRIPE_API_BASE", "").rstrip("/"),
            stripe_price_light=env.get("STRIPE_PRICE_LIGHT", ""),
            stripe_price_heavy=env.get("STRIPE_PRICE_HEAVY", ""),
            smtp_url=env.get("SMTP_URL", ""),
            mail_from=env.get("HERMES_MAIL_FROM", "Hermes Max <no-reply@localhost>"),
            rate_limit_storage=env.get("HERMES_RATE_LIMIT_STORAGE", "memory://"),
            proxy_hops=proxy_hops,
            encryption_keys=_parse_list(env.get("HERMES_ENCRYPTION_KEYS", "")),
            slack_signing_secret=env.get("SLACK_SIGNING_SECRET", ""),
            slack_client_id=env.get("SLACK_CLIENT_ID", ""),
            slack_client_secret=env.get("SLACK_CLIENT_SECRET", ""),
            slack_api_base=(env.get("SLACK_API_BASE") or "https://slack.com/api").rstrip("/"),
            slack_scopes=_parse_list(env.get("SLACK_SCOPES", "")) or SLACK_SCOPES,
            composio_api_key=env.get("COMPOSIO_API_KEY", ""),
            composio_api_base=(env.get("COMPOSIO_API_BASE", "").rstrip("/")
                               or "https://backend.composio.dev"),
            composio_webhook_secret=env.get("COMPOSIO_WEBHOOK_SECRET", ""),
            metrics_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR", ""),
            sentry_dsn=env.get("SENTRY_DSN", ""),
            log_format=_log_format(env),
            hetzner_server_types=_parse_pairs(env.get("HETZNER_SERVER_TYPES", ""), "HETZNER_SERVER_TYPES"),
            hetzner_ssh_key_names=_parse_list(env.get("HETZNER_SSH_KEY_NAMES", "")),
            hetzner_image_llm_backends=_parse_list(env.get("HETZNER_IMAGE_LLM_BACKENDS", "")),
            **{attr: env.get(var, "") for attr, var in HETZNER_ENV.items()},
        )


HETZNER_ENV = {
    "hcloud_token": "HCLOUD_TOKEN", "hcloud_endpoint": "HCLOUD_ENDPOINT",
    "hetzner_location": "HETZNER_LOCATION", "hetzner_snapshot_id": "HETZNER_SNAPSHOT_ID",
    "hetzner_network_id": "HETZNER_NETWORK_ID", "hetzner_firewall_label": "HETZNER_FIREWALL_LABEL",
    "hetzner_ssh_key_path": "HETZNER_SSH_KEY_PATH", "pulumi_backend_url": "PULUMI_BACKEND_URL",
    "pulumi_config_passphrase": "PULUMI_CONFIG_PASSPHRASE", "pulumi_home": "PULUMI_HOME",
    "archive_s3_endpoint": "ARCHIVE_S3_ENDPOINT", "archive_bucket": "ARCHIVE_BUCKET",
    "archive_access_key": "ARCHIVE_ACCESS_KEY", "archive_secret_key": "ARCHIVE_SECRET_KEY",
    "archive_region": "ARCHIVE_REGION",
}

AGENT_ENV_KEYS = ("HERMES_LLM", "HERMES_LLM_CHAIN", "HERMES_LLM_POLICY", "HERMES_MODEL",
                  "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY",
                  "HERMES_OPENAI_MODEL", "HERMES_LOG_FORMAT", "SENTRY_DSN")


def _log_format(env) -> str:
    try:
        return logs.format_from_env(env)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _parse_budgets(raw: str) -> dict[str, int]:
    budgets = dict(DEFAULT_PLAN_BUDGET_CENTS)
    for plan, cents in _parse_pairs(raw, "HERMES_PLAN_BUDGET_CENTS").items():
        try:
            budgets[plan] = int(cents)
        except ValueError:
            raise ConfigError(f"HERMES_PLAN_BUDGET_CENTS {plan}={cents!r} is not whole cents") \
                from None
    return budgets


def _check_agent_settings(settings: Settings) -> None:
    unknown = set(settings.plan_budget_cents) - {"light", "heavy"}
    negative = {p: c for p, c in settings.plan_budget_cents.items() if c < 0}
    if unknown or negative:
        raise ConfigError(f"HERMES_PLAN_BUDGET_CENTS takes light/heavy and cents >= 0, "
                          f"not {settings.plan_budget_cents}")
    try:
        ZoneInfo(settings.default_tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"HERMES_DEFAULT_TZ must be an IANA time zone such as Europe/Berlin, "
                          f"not {settings.default_tz!r}") from exc


def _bus_url(env) -> str:
    choice = env.get("HERMES_BUS", "")
    if choice not in ("", "redis", "sqlite"):
        raise ConfigError(f"HERMES_BUS must be redis or sqlite, not {choice!r}")
    if choice == "sqlite":
        return env.get("HERMES_BUS_URL", "")
    if choice == "redis" or env.get("REDIS_URL"):
        if not env.get("REDIS_URL"):
            raise ConfigError("HERMES_BUS=redis needs REDIS_URL")
        return env["REDIS_URL"]
    return env.get("HERMES_BUS_URL", "")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(filter(None, (item.strip() for item in raw.split(","))))


def _parse_pairs(raw: str, name: str) -> dict[str, str]:
    pairs = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{name} entry {pair!r} must look like key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def _parse_price_plans(raw: str) -> dict[str, str]:
    plans = _parse_pairs(raw, "STRIPE_PRICE_PLANS")
    bad = {price: plan for price, plan in plans.items() if plan not in ("light", "heavy")}
    if bad:
        raise ConfigError(f"STRIPE_PRICE_PLANS plans must be light or heavy, not {bad}")
    return plans
