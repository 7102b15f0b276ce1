"""Agent configuration: the only agent module that reads the environment.

The control plane (``LocalProvisioner``) or cloud-init (``/etc/hermes/agent.env`` on a VM)
sets these variables; see ``AgentConfig`` for names and defaults.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wire import logs

DEFAULT_ANTHROPIC_MODEL = "claude-haiku-5-5"  # Claude Haiku 5.5, the current Haiku (2026-10-07)
BACKENDS = ("anthropic", "openai_compat", "local")


class AgentConfigError(Exception):
    """The agent's configuration is invalid or incomplete."""


@dataclass(frozen=True)
class AgentConfig:
    """Every knob of one tenant's agent.

    Attributes (environment variable in brackets, default after ``=``):
        tenant: [HERMES_TENANT] required; the tenant id.
        data_dir: [HERMES_DATA_DIR] = ``/var/lib/hermes``; history, memory, skills, queue.
        bus_url: [HERMES_BUS_URL] = ``sqlite:///<data_dir>/bus.db``.
        bus_ca_file: [HERMES_BUS_CA_FILE] = ``""``; PEM CA that signed the Redis server certificate,
            used to verify a ``rediss://`` bus URL (``""`` = system CAs).
        llm: [HERMES_LLM] = ``anthropic`` when ANTHROPIC_API_KEY is set, else ``local``.
        model: [HERMES_MODEL] = ``claude-haiku-5-5`` (Claude Haiku 5.5) for anthropic, the bundled
            GGUF for local.
        anthropic_api_key: [ANTHROPIC_API_KEY] = ``""``.
        anthropic_base_url: [ANTHROPIC_BASE_URL] = ``""`` (the SDK's default endpoint).
        history_turns: [HERMES_HISTORY_TURNS] = 200 previous messages considered for context (older
            ones beyond the token budget are summarised).
        max_tokens: [HERMES_MAX_TOKENS] = 1024 output tokens per reply.
        visibility_timeout: [HERMES_VISIBILITY_TIMEOUT] = 30 seconds before an unacked envelope
            is redelivered.
        delta_interval: [HERMES_DELTA_INTERVAL] = 0.25 seconds between published deltas.
        consumer: [HERMES_CONSUMER] = ``agent-<tenant>``; the consumer name in the bus group.
        llm_chain: [HERMES_LLM_CHAIN] = ``<llm>``; comma-separated failover chain of backends
            (``anthropic``, ``openai_compat``, ``local``), primary first.
        llm_policy: [HERMES_LLM_POLICY] = ``quality_first`` (chain order) or ``cost_first``
            (cheapest backend first).
        openai_base_url: [OPENAI_BASE_URL] = ``""``; OpenRouter, Ollama ``/v1``, vLLM, llama.cpp.
        openai_api_key: [OPENAI_API_KEY] = ``""`` (a placeholder is sent to keyless servers).
        openai_model: [HERMES_OPENAI_MODEL] = ``""``; model id for ``openai_compat``.
        daily_budget_cents: [HERMES_DAILY_BUDGET_CENTS] = 100 cents of paid LLM use per tenant
            per UTC day; 0 disables the limit.
        prices_json: [HERMES_PRICES_JSON] = ``""``; JSON ``{model: [in, out]}`` in cents per
            million tokens, merged over ``agent.llm.pricing.PRICES_CENTS_PER_MTOK``.
        llm_retries: [HERMES_LLM_RETRIES] = 3 attempts per backend on retryable errors.
        llm_backoff: [HERMES_LLM_BACKOFF] = 0.5 seconds, the first retry wait (doubles, max 8 s).
        breaker_fail_max: [HERMES_BREAKER_FAIL_MAX] = 5 consecutive failures open a backend's
            circuit; breaker_reset: [HERMES_BREAKER_RESET] = 60 seconds until it half-opens.
        max_steps: [HERMES_MAX_STEPS] = 8 tool-use steps per turn.
        tool_timeout: [HERMES_TOOL_TIMEOUT] = 20 seconds per tool call.
        mcp_servers: [HERMES_MCP_SERVERS] = ``""``; MCP servers in the ``mcpServers`` JSON shape
            (``agent.mcp_client.config``): a file path, or the JSON itself when it starts with
            ``{``.  Servers pushed by the control plane (``<data_dir>/mcp_servers.json``) are
            added under their names.  Breakers use ``breaker_fail_max``/``breaker_reset``.
        context_tokens: [HERMES_CONTEXT_TOKENS] = 200000 tokens of context (capped by the
            backend's window).
        memory_extraction: [HERMES_MEMORY_EXTRACTION] = True; propose memories after each turn.
        skill_threshold: [HERMES_SKILL_THRESHOLD] = 0.85 cosine similarity to reuse a skill.
        skill_min_steps: [HERMES_SKILL_MIN_STEPS] = 3; a task with more tool steps is learned.
        cron_grace: [HERMES_CRON_GRACE] = 3600 seconds; a run missed by more is skipped.
        default_tz: [HERMES_TZ] = ``UTC``; the user's IANA time zone: cron zone when ``tz=`` is not
            given, and the calendar of dates named in memory searches ("yesterday", "on 3 June").
        task_attempts: [HERMES_TASK_ATTEMPTS] = 4 Huey attempts per envelope before dead-letter.
        task_retry_delay: [HERMES_TASK_RETRY_DELAY] = 2 seconds before the first retry (doubles).
        workers: [HERMES_WORKERS] = 2 Huey worker threads.
        heartbeat_interval: [HERMES_HEARTBEAT_INTERVAL] = 30 seconds between lifecycle heartbeats
            on the events stream (the control plane marks the machine unhealthy after missed ones).
        parent_pid: [HERMES_PARENT_PID] = 0; when set (by the local provisioner), the agent exits
            when that process dies, so no agent outlives a killed ``hermes serve``.
        log_format: [HERMES_LOG_FORMAT] = ``console`` (readable lines) or ``json`` (one JSON
            object per line, ``wire.logs``); tenant VMs get ``json`` (``infra/tenant_config.py``).
        metrics_port: [HERMES_METRICS_PORT] = 0 (off); TCP port of the Prometheus endpoint
            (``agent.metrics``) served by the process that runs turns (``run``/``worker``).
            Tenant VMs get 9464 (``infra/tenant_config.py``), the port Prometheus scrapes.
        metrics_addr: [HERMES_METRICS_ADDR] = ``127.0.0.1``; address the endpoint binds.
            Tenant VMs get ``0.0.0.0``: see ``agent.metrics`` for why that is private.
        sentry_dsn: [SENTRY_DSN] = ``""``; Sentry project DSN for unhandled errors (off when
            empty; ``wire.sentry``).
    """

    tenant: str
    data_dir: str = "/var/lib/hermes"
    bus_url: str = ""
    bus_ca_file: str = ""
    llm: str = "local"
    model: str = ""
    anthropic_api_key: str = ""
    anthropic_base_url: str = ""
    history_turns: int = 200
    max_tokens: int = 1024
    visibility_timeout: float = 30.0
    delta_interval: float = 0.25
    consumer: str = ""
    llm_chain: tuple[str, ...] = ()
    llm_policy: str = "quality_first"
    openai_base_url: str = ""
    openai_api_key: str = ""
    openai_model: str = ""
    daily_budget_cents: float = 100.0
    prices_json: str = ""
    llm_retries: int = 3
    llm_backoff: float = 0.5
    breaker_fail_max: int = 5
    breaker_reset: float = 60.0
    max_steps: int = 8
    tool_timeout: float = 20.0
    mcp_servers: str = ""
    context_tokens: int = 200_000
    memory_extraction: bool = True
    skill_threshold: float = 0.85
    skill_min_steps: int = 3
    cron_grace: float = 3600.0
    default_tz: str = "UTC"
    task_attempts: int = 4
    task_retry_delay: float = 2.0
    workers: int = 2
    heartbeat_interval: float = 30.0
    parent_pid: int = 0
    log_format: str = "console"
    metrics_port: int = 0
    metrics_addr: str = "127.0.0.1"
    sentry_dsn: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        if not self.bus_url:
            object.__setattr__(self, "bus_url", f"sqlite:///{Path(self.data_dir) / 'bus.db'}")
        if not self.consumer:
            object.__setattr__(self, "consumer", f"agent-{self.tenant}")
        if not self.llm_chain:
            object.__setattr__(self, "llm_chain", (self.llm,))
        for name in self.llm_chain:
            if name not in BACKENDS:
                raise AgentConfigError(f"unknown LLM backend {name!r} (expected one of {BACKENDS})")
        if "anthropic" in self.llm_chain and not self.anthropic_api_key:
            raise AgentConfigError("HERMES_LLM=anthropic needs ANTHROPIC_API_KEY")
        if "openai_compat" in self.llm_chain and not self.openai_base_url:
            raise AgentConfigError("HERMES_LLM=openai_compat needs OPENAI_BASE_URL")
        if self.llm_policy not in ("cost_first", "quality_first"):
            raise AgentConfigError(f"HERMES_LLM_POLICY must be cost_first or quality_first, "
                                   f"not {self.llm_policy!r}")
        try:
            ZoneInfo(self.default_tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise AgentConfigError(f"HERMES_TZ must be an IANA time zone such as Europe/Berlin, "
                                   f"not {self.default_tz!r}") from exc

    @property
    def prices(self) -> dict[str, tuple[float, float]]:
        """Model prices in cents per million tokens: defaults merged with ``prices_json``."""
        from agent.llm.pricing import PRICES_CENTS_PER_MTOK

        table = dict(PRICES_CENTS_PER_MTOK)
        if self.prices_json:
            table.update({k: (float(v[0]), float(v[1])) for k, v in json.loads(self.prices_json).items()})
        return table

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AgentConfig:
        """Build the configuration from ``environ`` (default ``os.environ``).

        Raises:
            AgentConfigError: HERMES_TENANT is missing or a value is invalid.
        """
        env = os.environ if environ is None else environ
        tenant = env.get("HERMES_TENANT", "")
        if not tenant:
            raise AgentConfigError("HERMES_TENANT is required")
        key = env.get("ANTHROPIC_API_KEY", "")
        llm = env.get("HERMES_LLM") or ("anthropic" if key else "local")
        chain = tuple(p.strip() for p in env.get("HERMES_LLM_CHAIN", "").split(",") if p.strip())
        try:
            return cls(
                tenant=tenant,
                data_dir=env.get("HERMES_DATA_DIR", "/var/lib/hermes"),
                bus_url=env.get("HERMES_BUS_URL", ""),
                bus_ca_file=env.get("HERMES_BUS_CA_FILE", ""),
                llm=llm,
                model=env.get("HERMES_MODEL", ""),
                anthropic_api_key=key,
                anthropic_base_url=env.get("ANTHROPIC_BASE_URL", ""),
                history_turns=int(env.get("HERMES_HISTORY_TURNS", "200")),
                max_tokens=int(env.get("HERMES_MAX_TOKENS", "1024")),
                visibility_timeout=float(env.get("HERMES_VISIBILITY_TIMEOUT", "30")),
                delta_interval=float(env.get("HERMES_DELTA_INTERVAL", "0.25")),
                consumer=env.get("HERMES_CONSUMER", ""),
                llm_chain=chain,
                llm_policy=env.get("HERMES_LLM_POLICY", "quality_first"),
                openai_base_url=env.get("OPENAI_BASE_URL", ""),
                openai_api_key=env.get("OPENAI_API_KEY", ""),
                openai_model=env.get("HERMES_OPENAI_MODEL", ""),
                daily_budget_cents=float(env.get("HERMES_DAILY_BUDGET_CENTS", "100")),
                prices_json=env.get("HERMES_PRICES_JSON", ""),
                llm_retries=int(env.get("HERMES_LLM_RETRIES", "3")),
                llm_backoff=float(env.get("HERMES_LLM_BACKOFF", "0.5")),
                breaker_fail_max=int(env.get("HERMES_BREAKER_FAIL_MAX", "5")),
                breaker_reset=float(env.get("HERMES_BREAKER_RESET", "60")),
                max_steps=int(env.get("HERMES_MAX_STEPS", "8")),
                tool_timeout=float(env.get("HERMES_TOOL_TIMEOUT", "20")),
                mcp_servers=env.get("HERMES_MCP_SERVERS", ""),
                context_tokens=int(env.get("HERMES_CONTEXT_TOKENS", "200000")),
                memory_extraction=env.get("HERMES_MEMORY_EXTRACTION", "1") not in ("0", "false", "no"),
                skill_threshold=float(env.get("HERMES_SKILL_THRESHOLD", "0.85")),
                skill_min_steps=int(env.get("HERMES_SKILL_MIN_STEPS", "3")),
                cron_grace=float(env.get("HERMES_CRON_GRACE", "3600")),
                default_tz=env.get("HERMES_TZ", "UTC"),
                task_attempts=int(env.get("HERMES_TASK_ATTEMPTS", "4")),
                task_retry_delay=float(env.get("HERMES_TASK_RETRY_DELAY", "2")),
                workers=int(env.get("HERMES_WORKERS", "2")),
                heartbeat_interval=float(env.get("HERMES_HEARTBEAT_INTERVAL", "30")),
                parent_pid=int(env.get("HERMES_PARENT_PID", "0")),
                log_format=log_format_from_env(env),
                metrics_port=int(env.get("HERMES_METRICS_PORT", "0")),
                metrics_addr=env.get("HERMES_METRICS_ADDR", "127.0.0.1"),
                sentry_dsn=env.get("SENTRY_DSN", ""),
            )
        except ValueError as exc:
            raise AgentConfigError(f"invalid numeric setting: {exc}") from exc

    @classmethod
    def reporting_from_env(cls, environ: dict[str, str] | None = None) -> AgentConfig | None:
        """Return just enough configuration to report a start-up failure on the bus.

        Used when ``from_env`` raised: tenant, data directory and bus settings are read the
        same way, every other setting keeps its default.  None when HERMES_TENANT is unset.
        """
        env = os.environ if environ is None else environ
        if not env.get("HERMES_TENANT"):
            return None
        return cls(tenant=env["HERMES_TENANT"], data_dir=env.get("HERMES_DATA_DIR", "/var/lib/hermes"),
                   bus_url=env.get("HERMES_BUS_URL", ""), bus_ca_file=env.get("HERMES_BUS_CA_FILE", ""))

    @property
    def data_path(self) -> Path:
        """``data_dir`` as a ``Path``."""
        return Path(self.data_dir)


def log_format_from_env(environ: dict[str, str] | None = None) -> str:
    """Return HERMES_LOG_FORMAT (``wire.logs.format_from_env``): ``console`` or ``json``.

    Read on its own too, so the agent sets up logging before the rest of its configuration is
    read (and can log why that failed).

    Raises:
        AgentConfigError: the value is not one of ``wire.logs.FORMATS``.
    """
    try:
        return logs.format_from_env(environ)
    except ValueError as exc:
        raise AgentConfigError(str(exc)) from None
