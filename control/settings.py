"""Control-plane configuration: the only module that reads the environment.

``Settings.from_env()`` reads every variable once; everything else receives a ``Settings``.
Defaults make the embedded mode work with no servers and no keys (DESIGN.md, "Defaults that
make it run anywhere").

Each setting is declared once, as a ``setting(...)`` field (``wire/declared.py``): its variable,
default, parser and meaning.  ``from_env``, the class docstring and README's configuration table
(``hermes settings --markdown``) all come from those declarations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from control.errors import ConfigError
from control.services.agent_settings import DEFAULT_PLAN_BUDGET_CENTS
from wire import shared_settings
from wire.declared import documented, read_env, setting


def _default_data_dir() -> str:
    return str(Path.home() / ".hermes")


# The Slack app's bot scopes (https://docs.slack.dev/reference/scopes): app_mention events,
# chat.postMessage/update, the /hermes command, DM events (im:history) and opening DMs
# (conversations.open needs im:write; im:read reads their metadata); files:read downloads the
# files people send (https://api.slack.com/scopes/files:read).
SLACK_SCOPES = ("app_mentions:read", "chat:write", "commands", "files:read", "im:history",
                "im:read", "im:write")

# The agent's LLM, logging and error-reporting variables (names as in ``agent/config.py``),
# handed unchanged to every agent this control plane starts.  Provider URLs and keys are not
# among them: they stay here, in the LLM gateway (issue #19, ``llm_*`` below).
AGENT_ENV_KEYS = ("HERMES_LLM", "HERMES_LLM_CHAIN", "HERMES_LLM_POLICY", "HERMES_MODEL",
                  "HERMES_OPENAI_MODEL", "HERMES_LOG_FORMAT", "SENTRY_DSN",
                  "HERMES_OPENAI_VISION", "HERMES_TRANSCRIBE_MODEL")

# Bus URL schemes of a Redis server (``wire.factory``): the task queue can share it.
REDIS_SCHEMES = ("redis://", "rediss://")

# The OpenAI API root: where a transcription key alone sends voice notes.
OPENAI_API_URL = "https://api.openai.com/v1"


def _url(raw: str) -> str:
    return raw.rstrip("/")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(filter(None, (item.strip() for item in raw.split(","))))


def _parse_pairs(raw: str) -> dict[str, str]:
    pairs = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"entry {pair!r} must look like key=value")
        pairs[key.strip()] = value.strip()
    return pairs


def _parse_price_plans(raw: str) -> dict[str, str]:
    plans = _parse_pairs(raw)
    bad = {price: plan for price, plan in plans.items() if plan not in ("light", "heavy")}
    if bad:
        raise ValueError(f"plans must be light or heavy, not {bad}")
    return plans


def _parse_warm_pool(raw: str) -> dict[str, int]:
    pool = {}
    for plan, count in _parse_pairs(raw).items():
        if plan not in ("light", "heavy"):
            raise ValueError(f"plans must be light or heavy, not {plan!r}")
        if not count.isdigit():
            raise ValueError(f"{plan}={count!r} is not a number of servers")
        pool[plan] = int(count)
    return pool


def _parse_threads(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{raw!r} is not a number of threads (1 or more)")
    return int(raw)


def _parse_shard(raw: str) -> tuple[int, int]:
    index, sep, count = raw.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"{raw!r} is not i/n with 0 <= i < n")
    return int(index), int(count)


def _parse_budgets(raw: str) -> dict[str, int]:
    budgets = dict(DEFAULT_PLAN_BUDGET_CENTS)
    for plan, cents in _parse_pairs(raw).items():
        try:
            budgets[plan] = int(cents)
        except ValueError:
            raise ValueError(f"{plan}={cents!r} is not whole cents") from None
    return budgets


# Redis memory each plan's tenant may hold on the bus (MiB; ``control/services/bus_quota.py``).
# An honest agent's events are acknowledged within seconds and trimmed, so it holds a few MiB;
# 32/64 MiB leave room for a long backlog while ~50 tenants at their quota still fit the 3 GB
# ``redis_maxmemory`` of roles/redis.
DEFAULT_BUS_QUOTA_MB: dict[str, int] = {"light": 32, "heavy": 64}


def _parse_bus_quotas(raw: str) -> dict[str, int]:
    quotas = dict(DEFAULT_BUS_QUOTA_MB)
    for plan, mib in _parse_pairs(raw).items():
        if plan not in ("light", "heavy") or not mib.isdigit() or int(mib) < 1:
            raise ValueError(f"{plan}={mib!r}: plans are light or heavy, quotas whole MiB >= 1")
        quotas[plan] = int(mib)
    return quotas


def _parse_scopes(raw: str) -> tuple[str, ...]:
    return _parse_list(raw) or SLACK_SCOPES


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


def _transcribe_url(env) -> str:
    key = env.get("HERMES_TRANSCRIBE_API_KEY") or env.get("OPENAI_API_KEY")
    url = env.get("HERMES_TRANSCRIBE_URL") or env.get("OPENAI_BASE_URL") or (OPENAI_API_URL if key else "")
    return url.rstrip("/")


def _parse_plan_models(raw: str) -> dict[str, tuple[str, ...]]:
    plans = {plan: tuple(models.split()) for plan, models in _parse_pairs(raw).items()}
    bad = sorted(set(plans) - {"light", "heavy"})
    if bad:
        raise ValueError(f"plans must be light or heavy, not {bad}")
    return plans


def _agent_env(env) -> dict[str, str]:
    return {k: env[k] for k in AGENT_ENV_KEYS if env.get(k)}


@documented
@dataclass(frozen=True)
class Settings:
    """Every knob of the control plane (declarations: ``wire/declared.py``)."""

    data_dir: str = setting(
        "HERMES_DATA_DIR", factory=_default_data_dir, shown="`~/.hermes`",
        doc="database, bus, queue, agents' data")
    database_url: str = setting(
        "DATABASE_URL", "", shown="`sqlite:///$HERMES_DATA_DIR/control.db`",
        doc="`postgresql://…` for Postgres (Supabase works)")
    port: int = setting("HERMES_PORT", 8000, parse=int, doc="HTTP port of `hermes serve`")
    public_url: str = setting(
        "HERMES_PUBLIC_URL", "", shown="`http://127.0.0.1:$HERMES_PORT`",
        doc="how agents, Telegram and Stripe reach the control plane")
    agent_control_url: str = setting(
        "HERMES_AGENT_CONTROL_URL", "", shown="`$HERMES_PUBLIC_URL`",
        doc="how agents reach the control plane (LLM gateway, MCP proxy): the control host's "
            "private address keeps that traffic on the private network")
    bus_url: str = setting(
        ("REDIS_URL", "HERMES_BUS", "HERMES_BUS_URL"), "", read=_bus_url,
        shown="`sqlite:///$HERMES_DATA_DIR/bus.db`",
        doc="the bus: `REDIS_URL` (Redis 7, `rediss://` for TLS) selects Redis when set; "
            "`HERMES_BUS` = `redis` or `sqlite` forces one (`redis` needs `REDIS_URL`); "
            "`HERMES_BUS_URL` is the bus URL when not Redis")
    bus_ca_file: str = shared_settings.bus_ca_file()
    stripe_webhook_secret: str = setting(
        "STRIPE_WEBHOOK_SECRET", "",
        doc="endpoint secret (`whsec_…`); unset → Stripe webhooks answer 503 (Stripe retries)")
    stripe_price_plans: dict[str, str] = setting(
        "STRIPE_PRICE_PLANS", {}, parse=_parse_price_plans,
        doc="`price_id=light,price_id2=heavy` fallback when a price has no "
            "`lookup_key`/`metadata.plan`")
    stripe_tolerance: int = setting(
        default=300, doc="seconds a Stripe signature timestamp may be old (Stripe's SDK default)")
    telegram_bot_token: str = setting("TELEGRAM_BOT_TOKEN", "", doc="the bot's token")
    telegram_bot_username: str = setting(
        "TELEGRAM_BOT_USERNAME", "HermesMaxBot", doc="used in deep links")
    telegram_webhook_secret: str = setting(
        "TELEGRAM_WEBHOOK_SECRET", "",
        doc="the `secret_token` given to `setWebhook`; unset → every update is refused")
    telegram_api_base: str = setting(
        "TELEGRAM_API_BASE", "https://api.telegram.org", parse=_url, doc="Bot API base URL")
    discord_public_key: str = setting(
        "DISCORD_PUBLIC_KEY", "",
        doc="the application's Ed25519 public key (hex); unset → every interaction is refused (401)")
    discord_bot_token: str = setting(
        "DISCORD_BOT_TOKEN", "", doc="the bot's token (REST API and Gateway)")
    discord_application_id: str = setting(
        "DISCORD_APPLICATION_ID", "",
        doc="the application's id (`hermes discord setup`, interaction webhooks)")
    discord_api_base: str = setting(
        "DISCORD_API_BASE", "https://discord.com/api/v10", parse=_url,
        doc="Discord REST API base URL")
    discord_gateway_url: str = setting(
        "DISCORD_GATEWAY_URL", "", doc="Gateway URL override; unset → `GET /gateway/bot`")
    slack_signing_secret: str = setting(
        "SLACK_SIGNING_SECRET", "",
        doc="the Slack app's signing secret, verifying every Slack request (v0 signature, "
            "`control/web/slack.py`); unset: Slack is off, its webhooks answer 401")
    slack_client_id: str = setting(
        "SLACK_CLIENT_ID", "",
        doc="the Slack app's OAuth client id for \"Add to Slack\" at `/slack/install` (unset: no "
            "install); bot tokens are stored encrypted (`HERMES_ENCRYPTION_KEYS`)")
    slack_client_secret: str = setting(
        "SLACK_CLIENT_SECRET", "", doc="the Slack app's OAuth client secret (oauth.v2.access)")
    slack_api_base: str = setting(
        "SLACK_API_BASE", "https://slack.com/api", parse=_url,
        doc="Slack Web API base URL (the local stand-in in tests and `hermes demo`)")
    slack_scopes: tuple[str, ...] = setting(
        "SLACK_SCOPES", SLACK_SCOPES, parse=_parse_scopes,
        doc="comma-separated bot scopes asked for at install: mentions, posting, `/hermes` and DMs")
    whatsapp_verify_token: str = setting(
        "WHATSAPP_VERIFY_TOKEN", "",
        doc="the verify token typed into the Meta app's webhook settings; `GET /webhooks/whatsapp` "
            "echoes `hub.challenge` only for it (unset: the handshake answers 403)")
    whatsapp_app_secret: str = setting(
        "WHATSAPP_APP_SECRET", "",
        doc="the Meta app secret verifying `X-Hub-Signature-256` on every WhatsApp webhook; "
            "unset: WhatsApp is off, its webhooks answer 401")
    whatsapp_access_token: str = setting(
        "WHATSAPP_ACCESS_TOKEN", "",
        doc="the system user's permanent Graph API token sending replies and fetching media "
            "(`runbooks/whatsapp-setup.md`)")
    whatsapp_phone_number_id: str = setting(
        "WHATSAPP_PHONE_NUMBER_ID", "",
        doc="the business number's Graph id, the sender of every reply (Meta app → WhatsApp → "
            "API Setup)")
    whatsapp_business_number: str = setting(
        "WHATSAPP_BUSINESS_NUMBER", "",
        doc="the business number, digits only with country code; the dashboard's `wa.me` link "
            "to link WhatsApp (unset: no link shown)")
    whatsapp_api_base: str = setting(
        "WHATSAPP_API_BASE", "https://graph.facebook.com/v23.0", parse=_url,
        doc="Graph API base URL with its version (the local stand-in in tests and benches)")
    whatsapp_template: str = setting(
        "WHATSAPP_TEMPLATE", "",
        doc="`name:language_code` of the approved template carrying cron output and notices "
            "outside the 24-hour window (its one body parameter is the text); unset: such "
            "messages are recorded as failed and raise an attention item")
    link_token_ttl: int = setting(
        "HERMES_LINK_TOKEN_TTL", 86400, parse=int, doc="link token lifetime, seconds (issue #2)")
    edit_interval: float = setting(
        "HERMES_EDIT_INTERVAL", 1.0, parse=float,
        doc="seconds between edits of one chat's streaming reply")
    delivery_concurrency: int = setting(
        "HERMES_DELIVERY_CONCURRENCY", 8, parse=_parse_threads,
        doc="threads of each delivery worker sending replies of different chats at once (issue "
            "22); one chat's replies stay in order; 1: one at a time")
    delivery_shard: tuple[int, int] = setting(
        "HERMES_DELIVERY_SHARD", (0, 1), parse=_parse_shard, shown="`0/1` (every tenant)",
        doc="`i/n`: this process's delivery worker takes the tenants whose id modulo n is i "
            "(issue 22); run one `hermes worker` per i, each reads only its share; only shard 0 "
            "schedules the periodic tasks")
    visibility_timeout: float = shared_settings.visibility_timeout()
    provisioner: str = setting(
        "HERMES_PROVISIONER", "local",
        doc="`local` (agents as local processes) or `hetzner` for production machines (see below)")
    env: str = setting("HERMES_ENV", "local", doc="the `env` label on machines")
    agent_env: dict[str, str] = setting(
        AGENT_ENV_KEYS, {}, read=_agent_env,
        doc="handed unchanged to every agent (only those set): the agent's LLM backend, chain, "
            "policy and model, the OpenAI-compatible model and vision, the transcription model, "
            "log format and Sentry DSN (meanings in the agent's table); provider URLs and keys "
            "stay in the LLM gateway (`llm_*` settings)")
    plan_budget_cents: dict[str, int] = setting(
        "HERMES_PLAN_BUDGET_CENTS", DEFAULT_PLAN_BUDGET_CENTS, parse=_parse_budgets,
        doc="each plan's paid LLM budget per tenant per UTC day, US cents, enforced by the LLM "
            "gateway (429 once spent) and sent to agents as `HERMES_DAILY_BUDGET_CENTS` "
            "(`control/services/agent_settings.py` justifies the defaults against the plan "
            "prices)")
    bus_quota_mb: dict[str, int] = setting(
        "HERMES_BUS_QUOTA_MB", DEFAULT_BUS_QUOTA_MB, parse=_parse_bus_quotas,
        doc="Redis bus only: each plan's quota of Redis memory per tenant, MiB (its events, dead "
            "letters and idempotency keys, `control/services/bus_quota.py`, checked every "
            "minute); over it acknowledged events are trimmed, then the tenant's appends are "
            "refused until it is back under 80 %")
    llm_anthropic_api_key: str = setting(
        "ANTHROPIC_API_KEY", "",
        doc="LLM gateway (`/llm/anthropic`, `control/web/llm_gateway.py`): the Anthropic key it "
            "adds to the agents' calls; no agent ever holds it (each gets its own revocable "
            "gateway token as its `ANTHROPIC_API_KEY`); unset: agents get no Claude")
    llm_anthropic_url: str = setting(
        "ANTHROPIC_BASE_URL", "https://api.anthropic.com", parse=_url,
        doc="LLM gateway: the Anthropic API root it forwards Messages calls to")
    llm_openai_url: str = setting(
        "OPENAI_BASE_URL", "", parse=_url,
        doc="LLM gateway (`/llm/openai/v1`): the OpenAI-compatible API root (OpenRouter, vLLM, "
            "Ollama `/v1`) it forwards chat completions to; unset: agents get no `openai_compat`")
    llm_openai_api_key: str = setting(
        "OPENAI_API_KEY", "", doc="LLM gateway: the key of that OpenAI-compatible API")
    llm_transcribe_url: str = setting(
        "HERMES_TRANSCRIBE_URL", "", read=_transcribe_url,
        shown="`$OPENAI_BASE_URL`, else `https://api.openai.com/v1` when a transcription key "
              "is set, else unset",
        doc="LLM gateway (`/llm/openai/v1/audio/transcriptions`): the OpenAI-compatible "
            "`/audio/transcriptions` root voice notes go to; unset: agents answer voice notes "
            "with a sentence saying transcription is off")
    llm_transcribe_api_key: str = setting(
        ("HERMES_TRANSCRIBE_API_KEY", "OPENAI_API_KEY"), "", shown="`$OPENAI_API_KEY`",
        doc="LLM gateway: the key of that transcription service")
    llm_plan_models: dict[str, tuple[str, ...]] = setting(
        "HERMES_PLAN_MODELS", {}, parse=_parse_plan_models,
        shown="unset (every model with a price in `wire/pricing.py` plus `HERMES_MODEL`, "
              "`HERMES_OPENAI_MODEL` and `HERMES_TRANSCRIBE_MODEL`, for both plans)",
        doc="LLM gateway: the models each plan may call, `light=model model2,heavy=*` (`*`: the "
            "default list; a dated id such as `claude-haiku-4-5-20251001` matches its alias); "
            "any other model is refused with 403 in the provider's error format")
    default_tz: str = setting(
        ("HERMES_DEFAULT_TZ", "HERMES_TZ"), "UTC",
        doc="IANA zone sent to every agent as `HERMES_TZ` (a zone the user sets on the dashboard "
            "overrides it); `HERMES_TZ` is read when `HERMES_DEFAULT_TZ` is unset")
    huey_immediate: bool = setting(default=False, doc="run Huey tasks inline (tests only)")
    task_queue: str = setting(
        "HERMES_TASK_QUEUE", "", shown="`redis` when the bus is Redis, else `sqlite`",
        doc="the control plane's Huey task queue: `redis` (on the bus's Redis, `huey.*` keys; "
            "workers on several hosts share it) or `sqlite` (`$HERMES_DATA_DIR/queue.db`, one "
            "host)")
    ready_timeout: float = setting(
        "HERMES_READY_TIMEOUT", 600.0, parse=float,
        doc="seconds from \"server running\" to the agent's `ready` event before the attempt "
            "counts as failed: a Hetzner server from a snapshot boots in about a minute, then "
            "cloud-init writes the env file and the agent loads its models; 10 minutes leaves "
            "room for a slow location without hiding a broken agent for long")
    heartbeat_interval: float = shared_settings.heartbeat_interval()
    missed_heartbeats: int = setting(
        "HERMES_MISSED_HEARTBEATS", 3, parse=int,
        doc="heartbeat intervals without a lifecycle event before a ready machine is `unhealthy`")
    provision_attempts: int = setting(
        "HERMES_PROVISION_ATTEMPTS", 3, parse=int,
        doc="provisioning attempts (first included) on transient failures (Hetzner 429/5xx, "
            "ready timeout) before the machine is `failed`")
    provision_retry_delay: float = setting(
        "HERMES_PROVISION_RETRY_DELAY", 60.0, parse=float,
        doc="seconds before the second provisioning attempt, doubled for each later one")
    provision_workers: int = setting(
        "HERMES_PROVISION_WORKERS", 16, parse=int,
        doc="threads of the dedicated provisioning queue (issue 22): each waits on one `pulumi "
            "up` subprocess (~20 s, ~150 MB); 16 have 100 sign-ups ready in 161 s (4: 523 s) "
            "within Hetzner's 3,600 requests/hour (`bench/load.py --scenario 2`)")
    warm_pool: dict[str, int] = setting(
        "HERMES_WARM_POOL", {}, parse=_parse_warm_pool, shown="empty (off)",
        doc="pre-booted, unassigned servers kept per plan, `light=10,heavy=2` (issue 22, "
            "`control/services/warm_pool.py`): a payment claims one instead of creating a "
            "server; topped up every minute, replaced when the snapshot changes")
    backup_retention_days: int = setting(
        "HERMES_BACKUP_RETENTION_DAYS", 14, parse=int,
        doc="UTC days of nightly backups kept (control DB + each tenant's agent data, "
            "`hermes backup`; `control/services/backups.py` keeps the newest backup of each day; "
            "`runbooks/backup-restore.md`)")
    backup_hour: int = setting(
        "HERMES_BACKUP_HOUR", 3, parse=int, doc="the UTC hour (0-23) of the nightly backup run")
    log_format: str = shared_settings.log_format()
    metrics_multiproc_dir: str = setting(
        "PROMETHEUS_MULTIPROC_DIR", "", shown="unset (`/run/hermes-control/metrics` on the control host)",
        doc="control under gunicorn: prometheus_client's multiprocess directory (it reads the "
            "variable itself), so `/metrics` sums every worker (`control/web/metrics.py`, "
            "`control/gunicorn_conf.py`); unset: one process, in-memory metrics")
    sentry_dsn: str = shared_settings.sentry_dsn()
    secret_key: str = setting(
        "HERMES_SECRET_KEY", "",
        shown="generated once in `$HERMES_DATA_DIR/secret_key` (0600) when `HERMES_ENV=local`; "
              "required otherwise",
        doc="signs web sessions, CSRF tokens and media URLs; keys envelope ids "
            "(`control/services/routing.py`)")
    stripe_secret_key: str = setting(
        "STRIPE_SECRET_KEY", "",
        doc="Stripe API key for Checkout, the customer portal and invoices (unset: the billing "
            "pages say billing is not set up)")
    stripe_api_base: str = setting(
        "STRIPE_API_BASE", "", parse=_url, shown="`https://api.stripe.com` (the SDK's)",
        doc="Stripe API base URL (the local stand-in in `make demo` and tests)")
    stripe_price_light: str = setting(
        "STRIPE_PRICE_LIGHT", "", doc="the recurring Price id Checkout sells for the light plan")
    stripe_price_heavy: str = setting(
        "STRIPE_PRICE_HEAVY", "", doc="the recurring Price id Checkout sells for the heavy plan")
    grace_days: int = setting(
        "HERMES_GRACE_DAYS", 7, parse=int,
        doc="days a canceled tenant's agent stays paused (data kept, chats told why) before its "
            "machine is archived and destroyed (issue #10); `0` = paused until the next "
            "`end_grace` run")
    archive_retention_days: int = setting(
        "HERMES_ARCHIVE_RETENTION_DAYS", 30, parse=int,
        doc="days an archive is kept; resubscribing within them restores memories, skills, cron "
            "jobs and history onto the new machine")
    smtp_url: str = setting(
        "SMTP_URL", "",
        doc="`smtp[s]://user:password@host:port[?starttls=1]` for account mail (sent from the "
            "outbox every minute); unset: mail stays in the outbox table and `hermes serve` "
            "prints each mail")
    mail_from: str = setting(
        "HERMES_MAIL_FROM", "Hermes Max <no-reply@localhost>", doc="the From header of account mail")
    rate_limit_storage: str = setting(
        "HERMES_RATE_LIMIT_STORAGE", "memory://",
        doc="flask-limiter storage URI (`redis://…` so every gunicorn worker shares the counters)")
    streams_per_tenant: int = setting(
        "HERMES_STREAMS_PER_TENANT", 4, parse=int,
        doc="web-chat and MCP streams one tenant may hold open at once (more: 429 with "
            "`Retry-After`), counted in `HERMES_RATE_LIMIT_STORAGE` across gunicorn workers; "
            "keep it well under workers x threads (README, \"Request slots\")")
    encryption_keys: tuple[str, ...] = setting(
        "HERMES_ENCRYPTION_KEYS", (), parse=_parse_list,
        shown="generated once in `$HERMES_DATA_DIR/encryption_key` (0600) when `HERMES_ENV=local`; "
              "required otherwise",
        doc="comma-separated Fernet keys, newest first, encrypting third-party credentials at "
            "rest (`control/services/secrets_box.py`)")
    composio_api_key: str = setting(
        "COMPOSIO_API_KEY", "",
        doc="Composio project key behind users' connections (`control/services/composio_client.py`; "
            "unset: the Connections page and API say connections are not set up, 503)")
    composio_api_base: str = setting(
        "COMPOSIO_API_BASE", "https://backend.composio.dev", parse=_url,
        doc="Composio's API base URL (the local stand-in `standins/composio_api.py` in tests)")
    composio_webhook_secret: str = setting(
        "COMPOSIO_WEBHOOK_SECRET", "",
        doc="the Composio project's webhook signing secret (unset: `/webhooks/composio` refuses "
            "every delivery, 401)")
    proxy_hops: int = setting(
        "HERMES_PROXY_HOPS", 0, parse=int, shown="`0` (`1` on the control host)",
        doc="trusted reverse proxies whose `X-Forwarded-For`/`-Proto` are used (werkzeug "
            "`ProxyFix`): behind the control role's nginx, rate limits key on the client's "
            "address, not nginx's")
    media_max_bytes: int = setting(
        "HERMES_MEDIA_MAX_BYTES", 20 * 1024 * 1024, parse=int, shown="`20971520` (20 MB)",
        doc="largest file a user may send, bytes; larger ones reach the agent as `too_large` "
            "(20 MB: the Bot API's download limit, https://core.telegram.org/bots/api#getfile)")
    media_bucket: str = setting(
        "MEDIA_BUCKET", "",
        doc="bucket for the files users send, on the `ARCHIVE_S3_ENDPOINT` Object Storage with "
            "the `ARCHIVE_*` credentials; unset → `$HERMES_DATA_DIR/media`")
    media_retention_days: int = setting(
        "HERMES_MEDIA_RETENTION_DAYS", 30, parse=int,
        doc="days a file users sent is kept (a daily task deletes older ones; its URL works 7 days)")
    hcloud_token: str = setting(
        "HCLOUD_TOKEN", "", doc="Hetzner provisioner: Hetzner Cloud API token, read+write")
    hcloud_endpoint: str = setting(
        "HCLOUD_ENDPOINT", "", shown="unset (the public API)",
        doc="Hetzner provisioner: Hetzner API base URL")
    hetzner_location: str = setting(
        "HETZNER_LOCATION", "", shown="unset (`nbg1`, `control/providers/hetzner/config.py`)",
        doc="Hetzner provisioner: location of tenant servers (stack output `location`)")
    hetzner_snapshot_id: str = setting(
        "HETZNER_SNAPSHOT_ID", "",
        doc="Hetzner provisioner: the agent base snapshot (stack output `snapshotId`)")
    hetzner_network_id: str = setting(
        "HETZNER_NETWORK_ID", "",
        doc="Hetzner provisioner: the private network (stack output `networkId`)")
    hetzner_firewall_label: str = setting(
        "HETZNER_FIREWALL_LABEL", "",
        doc="Hetzner provisioner: label selector of the tenant firewall (stack output "
            "`tenantFirewallLabel`)")
    hetzner_server_types: dict[str, str] = setting(
        "HETZNER_SERVER_TYPES", {}, parse=_parse_pairs, shown="unset (`light=cx23,heavy=cx33`)",
        doc="Hetzner provisioner: `plan=server type,...`")
    hetzner_ssh_key_names: tuple[str, ...] = setting(
        "HETZNER_SSH_KEY_NAMES", (), parse=_parse_list,
        doc="Hetzner provisioner: comma-separated Hetzner SSH key names (stack output `sshKeyNames`)")
    hetzner_image_llm_backends: tuple[str, ...] = setting(
        "HETZNER_IMAGE_LLM_BACKENDS", (), parse=_parse_list,
        shown="unset (`anthropic,openai_compat`)",
        doc="Hetzner provisioner: comma-separated LLM backends the pinned snapshot installs "
            "(agent_image `hermes_llm_backends`); provisioning refuses an LLM chain the VM could "
            "not start")
    hetzner_ssh_key_path: str = setting(
        "HETZNER_SSH_KEY_PATH", "",
        doc="Hetzner provisioner: private key for tenant servers on this host; unset: no SSH")
    pulumi_backend_url: str = setting(
        "PULUMI_BACKEND_URL", "",
        doc="Hetzner provisioner: state backend of the tenant stacks (`s3://…`, `file://…`)")
    pulumi_config_passphrase: str = setting(
        "PULUMI_CONFIG_PASSPHRASE", "",
        doc="Hetzner provisioner: encrypts the tenant stacks' secrets")
    pulumi_home: str = setting(
        "PULUMI_HOME", "", shown="unset (`~/.pulumi`)",
        doc="Hetzner provisioner: Pulumi plugins and credentials")
    archive_s3_endpoint: str = setting(
        "ARCHIVE_S3_ENDPOINT", "",
        doc="Hetzner provisioner: Object Storage endpoint of archives and backups (stack output "
            "`archiveEndpoint`)")
    archive_bucket: str = setting(
        "ARCHIVE_BUCKET", "", doc="Hetzner provisioner: archive bucket (stack output `archiveBucket`)")
    archive_access_key: str = setting(
        "ARCHIVE_ACCESS_KEY", "",
        doc="Hetzner provisioner: Object Storage access key (stack output `archiveAccessKey`)")
    archive_secret_key: str = setting(
        "ARCHIVE_SECRET_KEY", "",
        doc="Hetzner provisioner: Object Storage secret key (stack output `archiveSecretKey`)")
    archive_region: str = setting(
        "ARCHIVE_REGION", "", doc="Hetzner provisioner: archive region (stack output `archiveRegion`)")
    drift_delay: float = setting(
        "HERMES_DRIFT_DELAY", 5.0, parse=float,
        doc="seconds between two stack previews in `hermes drift`")

    def __post_init__(self):
        data = str(Path(self.data_dir).expanduser().resolve())
        object.__setattr__(self, "data_dir", data)
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{data}/control.db")
        if not self.bus_url:
            object.__setattr__(self, "bus_url", f"sqlite:///{data}/bus.db")
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://127.0.0.1:{self.port}")
        if not self.agent_control_url:
            object.__setattr__(self, "agent_control_url", self.public_url)
        if self.provisioner not in ("local", "hetzner"):
            raise ConfigError(f"HERMES_PROVISIONER must be local or hetzner, not {self.provisioner!r}")
        if not self.task_queue:
            object.__setattr__(self, "task_queue", "redis" if self.bus_url.startswith(REDIS_SCHEMES)
                               else "sqlite")
        if self.task_queue not in ("redis", "sqlite"):
            raise ConfigError(f"HERMES_TASK_QUEUE must be redis or sqlite, not {self.task_queue!r}")
        if self.task_queue == "redis" and not self.bus_url.startswith(REDIS_SCHEMES):
            raise ConfigError("HERMES_TASK_QUEUE=redis needs the bus on Redis (REDIS_URL)")
        _check_agent_settings(self)
        if self.backup_retention_days < 1 or not 0 <= self.backup_hour <= 23:
            raise ConfigError(f"HERMES_BACKUP_RETENTION_DAYS must be >= 1 and HERMES_BACKUP_HOUR "
                              f"0-23, not {self.backup_retention_days} and {self.backup_hour}")
        if self.grace_days < 0 or self.archive_retention_days < 1:
            raise ConfigError(f"HERMES_GRACE_DAYS must be >= 0 and HERMES_ARCHIVE_RETENTION_DAYS "
                              f">= 1, not {self.grace_days} and {self.archive_retention_days}")
        if self.media_max_bytes < 1 or self.media_retention_days < 1:
            raise ConfigError(f"HERMES_MEDIA_MAX_BYTES and HERMES_MEDIA_RETENTION_DAYS must be "
                              f">= 1, not {self.media_max_bytes} and {self.media_retention_days}")

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
        """Build settings from ``environ`` (default ``os.environ``): every declared variable
        that is set and non-empty, the declared default for the others.

        Raises:
            ConfigError: a variable has an invalid value.
        """
        return cls(**read_env(cls, os.environ if environ is None else environ, ConfigError))


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
