"""Agent configuration: the only agent module that reads the environment.

The control plane (``LocalProvisioner``) or cloud-init (``/etc/hermes/agent.env`` on a VM)
sets these variables.  Each is declared once, as a ``setting(...)`` field of ``AgentConfig``
(``wire/declared.py``): ``from_env``, the class docstring and README's agent table
(``hermes settings --markdown``) come from those declarations.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from wire import logs, shared_settings
from wire.declared import documented, read_env, setting
from wire.pricing import PRICES_CENTS_PER_MTOK

DEFAULT_ANTHROPIC_MODEL = "claude-haiku-5-5"  # Claude Haiku 5.5, the current Haiku (2026-10-07)
BACKENDS = ("anthropic", "openai_compat", "local")


class AgentConfigError(Exception):
    """The agent's configuration is invalid or incomplete."""


def log_format_from_env(environ: Mapping[str, str] | None = None) -> str:
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


def _llm(env) -> str:
    return env.get("HERMES_LLM") or ("anthropic" if env.get("ANTHROPIC_API_KEY") else "local")


def _parse_list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _parse_flag(raw: str) -> bool:
    return raw not in ("0", "false", "no")


def _parse_on(raw: str) -> bool:
    return raw.strip().lower() in ("1", "true", "yes", "on")


# The OpenAI API root: where a transcription key alone sends voice notes.
OPENAI_API_URL = "https://api.openai.com/v1"


def _transcribe_url(env) -> str:
    key = env.get("HERMES_TRANSCRIBE_API_KEY") or env.get("OPENAI_API_KEY")
    url = env.get("HERMES_TRANSCRIBE_URL") or env.get("OPENAI_BASE_URL") or (OPENAI_API_URL if key else "")
    return url.rstrip("/")


@documented
@dataclass(frozen=True)
class AgentConfig:
    """Every knob of one tenant's agent (declarations: ``wire/declared.py``)."""

    tenant: str = setting("HERMES_TENANT", doc="agent: the tenant id")
    data_dir: str = setting(
        "HERMES_DATA_DIR", "/var/lib/hermes",
        doc="agent: history, memory, skills, queue (the control plane's own `HERMES_DATA_DIR` "
            "for local agents is `$HERMES_DATA_DIR/agents/<tenant>`)")
    embedder_dir: str = setting(
        "HERMES_EMBEDDER_DIR", "", shown="`~/.cache/hermes/all-MiniLM-L6-v2-onnx`",
        doc="agent: the embedding model exported to ONNX (`hermes image export-embedder DIR`); "
            "the image ships `/opt/hermes/embedder`. The default is exported there on first use "
            "where torch is installed (the `embed-export` extra)")
    bus_url: str = setting(
        "HERMES_BUS_URL", "", shown="`sqlite:///$HERMES_DATA_DIR/bus.db`",
        doc="agent: the bus (its own Redis ACL user's `rediss://` URL on a tenant VM)")
    bus_ca_file: str = shared_settings.bus_ca_file()
    llm: str = setting(
        "HERMES_LLM", "local", read=_llm, shown="`anthropic` if a key is set, else `local`",
        doc="the agent's LLM backend: `anthropic`, `openai_compat` or `local`")
    model: str = setting(
        "HERMES_MODEL", "", shown=f"`{DEFAULT_ANTHROPIC_MODEL}` / bundled GGUF",
        doc="model override (Claude Haiku 5.5 for anthropic, the bundled GGUF for local)")
    anthropic_api_key: str = setting(
        "ANTHROPIC_API_KEY", "",
        doc="Claude credentials: from the control plane, the tenant's own LLM-gateway token "
            "(the provider key never leaves the control plane)")
    anthropic_base_url: str = setting(
        "ANTHROPIC_BASE_URL", "", shown="unset (the SDK's endpoint)",
        doc="Claude endpoint: from the control plane, its LLM gateway (`/llm/anthropic`)")
    history_turns: int = setting(
        "HERMES_HISTORY_TURNS", 200, parse=int,
        doc="agent: previous messages considered for context (older ones beyond the token "
            "budget are summarised)")
    max_tokens: int = setting(
        "HERMES_MAX_TOKENS", 1024, parse=int, doc="agent: output tokens per reply")
    visibility_timeout: float = shared_settings.visibility_timeout()
    delta_interval: float = setting(
        "HERMES_DELTA_INTERVAL", 0.25, parse=float,
        doc="agent: seconds between published reply deltas")
    consumer: str = setting(
        "HERMES_CONSUMER", "", shown="`agent-<tenant>`",
        doc="agent: the consumer name in the bus group")
    llm_chain: tuple[str, ...] = setting(
        "HERMES_LLM_CHAIN", (), parse=_parse_list, shown="`$HERMES_LLM`",
        doc="comma-separated failover chain of backends (`anthropic`, `openai_compat`, "
            "`local`), primary first")
    llm_policy: str = setting(
        "HERMES_LLM_POLICY", "quality_first",
        doc="`quality_first` (chain order) or `cost_first` (cheapest backend first)")
    openai_base_url: str = setting(
        "OPENAI_BASE_URL", "",
        doc="an OpenAI-compatible backend (OpenRouter, vLLM, Ollama `/v1`, llama.cpp); from the "
            "control plane, its LLM gateway (`/llm/openai/v1`)")
    openai_api_key: str = setting(
        "OPENAI_API_KEY", "",
        doc="its key (a placeholder is sent to keyless servers); from the control plane, the "
            "tenant's LLM-gateway token")
    openai_model: str = setting(
        "HERMES_OPENAI_MODEL", "", doc="the model id for `openai_compat`")
    daily_budget_cents: float = setting(
        "HERMES_DAILY_BUDGET_CENTS", 100.0, parse=float,
        doc="agent: cents of paid LLM use per tenant per UTC day; `0` disables the limit (the "
            "control plane sends its plan's `HERMES_PLAN_BUDGET_CENTS`)")
    turn_budget_cents: float = setting(
        "HERMES_TURN_BUDGET_CENTS", 25.0, parse=float,
        doc="agent: cents one reply's model calls may cost before the loop guard ends it with an "
            "explanation (`agent/loop_guard.py`); a quarter of the default daily budget, so no "
            "single runaway reply can spend the day; `0` disables the cap")
    goal_max_turns: int = setting(
        "HERMES_GOAL_MAX_TURNS", 20, parse=int,
        doc="agent: turns a `/goal` may take before it stops undone (Hermes Agent's default; the "
            "backstop when the judge never says done, `agent/goal_runner.py`)")
    goal_budget_cents: float = setting(
        "HERMES_GOAL_BUDGET_CENTS", 50.0, parse=float,
        doc="agent: cents one `/goal` may spend (its turns and judge calls) before it stops; half "
            "the default daily budget, so a goal leaves room for the day's conversation")
    goal_yield_delay: float = setting(
        "HERMES_GOAL_YIELD_DELAY", 5.0, parse=float,
        doc="agent: seconds a goal waits before looking again when the user's own message in its "
            "chat is being answered")
    prices_json: str = setting(
        "HERMES_PRICES_JSON", "",
        doc="agent: JSON `{model: [in, out]}` in cents per million tokens, merged over "
            "`wire.pricing.PRICES_CENTS_PER_MTOK`")
    llm_retries: int = setting(
        "HERMES_LLM_RETRIES", 3, parse=int, doc="agent: attempts per backend on retryable errors")
    llm_backoff: float = setting(
        "HERMES_LLM_BACKOFF", 0.5, parse=float,
        doc="agent: seconds of the first retry wait (doubles, max 8 s)")
    breaker_fail_max: int = setting(
        "HERMES_BREAKER_FAIL_MAX", 5, parse=int,
        doc="agent: consecutive failures that open a backend's (or MCP server's) circuit")
    breaker_reset: float = setting(
        "HERMES_BREAKER_RESET", 60.0, parse=float,
        doc="agent: seconds until an open circuit half-opens")
    max_steps: int = setting("HERMES_MAX_STEPS", 8, parse=int, doc="agent: tool-use steps per turn")
    tool_timeout: float = setting(
        "HERMES_TOOL_TIMEOUT", 20.0, parse=float, doc="agent: seconds per tool call")
    mcp_servers: str = setting(
        "HERMES_MCP_SERVERS", "",
        doc="agent: MCP servers in the `mcpServers` JSON shape (`agent.mcp_client.config`): a "
            "file path, or the JSON itself when it starts with `{`; servers the control plane "
            "pushes (`<data>/mcp_servers.json`) are added under their names; `hermes-agent "
            "tools` lists what the model is offered")
    context_tokens: int = setting(
        "HERMES_CONTEXT_TOKENS", 200_000, parse=int,
        doc="agent: tokens of context (capped by the backend's window)")
    memory_extraction: bool = setting(
        "HERMES_MEMORY_EXTRACTION", True, parse=_parse_flag,
        doc="agent: propose memories after each turn (`0`, `false` or `no` turn it off)")
    skill_threshold: float = setting(
        "HERMES_SKILL_THRESHOLD", 0.85, parse=float,
        doc="agent: cosine similarity to reuse a learned skill")
    skill_min_steps: int = setting(
        "HERMES_SKILL_MIN_STEPS", 3, parse=int,
        doc="agent: a task with more tool steps than this is learned as a skill")
    cron_grace: float = setting(
        "HERMES_CRON_GRACE", 3600.0, parse=float,
        doc="agent: seconds; a cron run missed by more is skipped")
    default_tz: str = setting(
        "HERMES_TZ", "UTC",
        doc="the user's IANA time zone (agent): default zone of `/cron`, and the calendar of "
            "dates named in memory searches (\"yesterday\", \"on 3 June, 2026\")")
    task_attempts: int = setting(
        "HERMES_TASK_ATTEMPTS", 4, parse=int,
        doc="agent: Huey attempts per envelope before dead-letter")
    task_retry_delay: float = setting(
        "HERMES_TASK_RETRY_DELAY", 2.0, parse=float,
        doc="agent: seconds before the first task retry (doubles)")
    workers: int = setting("HERMES_WORKERS", 2, parse=int, doc="agent: Huey worker threads")
    heartbeat_interval: float = shared_settings.heartbeat_interval()
    parent_pid: int = setting(
        "HERMES_PARENT_PID", 0, parse=int,
        doc="agent: when set (by the local provisioner), the agent exits when that process "
            "dies, so no agent outlives a killed `hermes serve`")
    log_format: str = shared_settings.log_format()
    metrics_port: int = setting(
        "HERMES_METRICS_PORT", 0, parse=int, shown="`0` (off); `9464` on tenant VMs",
        doc="agent: TCP port of the Prometheus endpoint of the process that runs turns "
            "(`agent/metrics.py`: messages, turn and tool latency, tokens and cost, errors), "
            "scraped over the private network")
    metrics_addr: str = setting(
        "HERMES_METRICS_ADDR", "127.0.0.1", shown="`127.0.0.1`; `0.0.0.0` on tenant VMs",
        doc="agent: address the metrics endpoint binds (`agent/metrics.py` says why `0.0.0.0` "
            "is private on a tenant VM)")
    sentry_dsn: str = shared_settings.sentry_dsn()
    openai_vision: bool = setting(
        "HERMES_OPENAI_VISION", False, parse=_parse_on,
        doc="agent: the `openai_compat` model can see images (`1`: it is sent `image_url` "
            "parts); otherwise a photo goes to a backend of the chain that can see, or the reply "
            "says none can")
    media_max_bytes: int = setting(
        "HERMES_AGENT_MEDIA_MAX_BYTES", 50 * 1024 * 1024, parse=int, shown="`52428800` (50 MB)",
        doc="agent: the largest attachment the agent downloads, bytes (`agent/media/fetch.py`): "
            "a guard for the VM's memory, above the control plane's `HERMES_MEDIA_MAX_BYTES`, "
            "which refuses larger files first")
    document_max_chars: int = setting(
        "HERMES_DOCUMENT_MAX_CHARS", 40_000, parse=int,
        doc="agent: characters of document text (PDF, text files) put into one message; the "
            "model is told when a document was cut")
    transcribe_url: str = setting(
        "HERMES_TRANSCRIBE_URL", "", read=_transcribe_url,
        shown="`$OPENAI_BASE_URL`, else `https://api.openai.com/v1` when a transcription key "
              "is set, else unset",
        doc="agent: root of the OpenAI-compatible `/audio/transcriptions` (Whisper API) that "
            "turns voice notes into text (`agent/media/transcribe.py`); unset: voice notes are "
            "answered with a sentence saying transcription is off")
    transcribe_api_key: str = setting(
        ("HERMES_TRANSCRIBE_API_KEY", "OPENAI_API_KEY"), "", shown="`$OPENAI_API_KEY`",
        doc="agent: key of that transcription service")
    transcribe_model: str = setting(
        "HERMES_TRANSCRIBE_MODEL", "whisper-1", doc="agent: the transcription model")

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
        table = dict(PRICES_CENTS_PER_MTOK)
        if self.prices_json:
            table.update({k: (float(v[0]), float(v[1])) for k, v in json.loads(self.prices_json).items()})
        return table

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> AgentConfig:
        """Build the configuration from ``environ`` (default ``os.environ``): every declared
        variable that is set and non-empty, the declared default for the others.

        Raises:
            AgentConfigError: HERMES_TENANT is missing or a value is invalid.
        """
        return cls(**read_env(cls, os.environ if environ is None else environ, AgentConfigError))

    @classmethod
    def reporting_from_env(cls, environ: dict[str, str] | None = None) -> AgentConfig | None:
        """Return just enough configuration to report a start-up failure on the bus.

        Used when ``from_env`` raised: tenant, data directory and bus settings are read the
        same way, every other setting keeps its default.  None when HERMES_TENANT is unset.
        """
        env = os.environ if environ is None else environ
        if not env.get("HERMES_TENANT"):
            return None
        return cls(**read_env(cls, env, AgentConfigError,
                              only=("tenant", "data_dir", "bus_url", "bus_ca_file")))

    @property
    def data_path(self) -> Path:
        """``data_dir`` as a ``Path``."""
        return Path(self.data_dir)
