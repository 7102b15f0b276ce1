"""The agent runtime of one tenant: every service wired once from ``AgentConfig``.

Files under ``<data_dir>``: ``history.db`` (turns, processed ledger, summaries, prefs),
``usage.db`` (LLM calls), ``memory.db`` (``agent.memory``), ``cron.db``, ``goals.db``
(``agent.goals``), ``drafts.db`` (open questions of drafts, ``agent.drafts``), ``inbox.db``
(inbox ledger, stop flags), ``skills/<name>/SKILL.md``, ``huey.db`` (the task queue),
``mcp_servers.json`` (MCP servers pushed by the control plane, ``agent.mcp_client``),
``tool_permissions.json`` (tools the user allowed, pending confirmations), ``mcp_logs/``
(stdio MCP servers' stderr).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from agent import commands, preferences
from agent.config import AgentConfig
from agent.context import ContextBuilder
from agent.cron import CronStore
from agent.drafts import OpenQuestions
from agent.goals import GoalStore
from agent.history import History
from agent.inbox import InboxLedger
from agent.llm import router_from_config
from agent.llm.router import Router
from agent.loop import ToolLoop
from agent.mcp_client.config import McpConfigError, load_servers, specs_from_servers, write_pushed
from agent.mcp_client.manager import McpManager
from agent.memory import MemoryStore, default_embedder
from agent.preferences import Preferences
from agent.skills import SkillLibrary
from agent.tools.loader import load_builtin_tools
from agent.tools.permissions import ToolPermissions
from agent.tools.registry import LayeredRegistry, ToolRegistry
from agent.usage import UsageLedger
from wire.factory import bus_from_url
from wire.protocol import Event, events_stream

log = logging.getLogger(__name__)


class AgentRuntime:
    """Services of one tenant's agent.

    Args:
        config: the agent configuration.
        bus: a ``wire.bus.Bus`` (default: from ``config.bus_url``).
        backends: LLM backends for the router (default: ``config.llm_chain``); tests pass
            backends pointed at stand-ins.
        embedder: embeddings for memory and skills (default: the bundled MiniLM, lazily).
        registry: tools offered to the model besides MCP tools (default: the built-ins).
        clock: wall clock in Unix seconds (cron and usage periods; frozen in tests).
        sleep: the router's retry sleep.
        start_mcp: connect the configured MCP servers now (``start_mcp``); the listen-only
            process, which runs no turns, passes False.
    """

    def __init__(self, config: AgentConfig, *, bus=None, backends=None, embedder=None,
                 registry: ToolRegistry | None = None, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, start_mcp: bool = True):
        self.config = config
        self.tenant = config.tenant
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self.bus = bus or bus_from_url(config.bus_url, visibility_timeout=config.visibility_timeout,
                                       ca_file=config.bus_ca_file)
        self.events_stream = events_stream(config.tenant)
        self.history = History(data / "history.db")
        self.usage = UsageLedger(data / "usage.db", clock=clock)
        self.inbox = InboxLedger(data / "inbox.db")
        self.cron = CronStore(data / "cron.db", config.tenant, clock=clock)
        self.goals = GoalStore(data / "goals.db", clock=clock)
        self.drafts = OpenQuestions(data / "drafts.db", clock=clock)
        # Set by ``agent.tasks.AgentTasks``: queues a goal's next step (``/goal`` uses it).
        self.schedule_goal: Callable[[int], None] | None = None
        self._embedder = embedder
        self._memory: MemoryStore | None = None
        self._memory_lock = threading.Lock()
        preference = self._model_choice
        if backends is None:
            self.router = router_from_config(config, self.usage, preference)
        else:
            self.router = Router(backends, self.usage, config.tenant, policy=config.llm_policy,
                                 daily_budget_cents=config.daily_budget_cents, prices=config.prices,
                                 retries=config.llm_retries, backoff=config.llm_backoff,
                                 breaker_fail_max=config.breaker_fail_max,
                                 breaker_reset=config.breaker_reset, preference=preference, sleep=sleep)
        self.registry = LayeredRegistry(registry or load_builtin_tools())
        self.tool_permissions = ToolPermissions(data / "tool_permissions.json", clock=clock)
        self.mcp = McpManager(self.registry, data_dir=data, fail_max=config.breaker_fail_max,
                              reset=config.breaker_reset)
        self.skills = SkillLibrary(data / "skills", _LazyEmbedder(self), threshold=config.skill_threshold,
                                   min_steps=config.skill_min_steps)
        window = min(config.context_tokens, self.router.context_window)
        self.context = ContextBuilder(self.history, budget_tokens=max(1024, window - config.max_tokens),
                                      history_limit=config.history_turns, memory=self.memory,
                                      skills=self.skills,
                                      summarise=lambda prompt: self.router.complete(prompt, purpose="summary"))
        self.loop = ToolLoop(self.router, self.registry, max_steps=config.max_steps,
                             tool_timeout=config.tool_timeout, max_tokens=config.max_tokens,
                             budget_cents=config.turn_budget_cents)
        if start_mcp:
            self.start_mcp()

    def start_mcp(self) -> dict[str, str]:
        """Connect the MCP servers of ``HERMES_MCP_SERVERS`` and ``<data_dir>/mcp_servers.json``.

        A broken setting is logged and leaves the agent with its built-in tools.

        Returns:
            ``McpManager.status()``: ``{server: ""}`` when usable, else the reason.
        """
        try:
            raw = load_servers(self.config.mcp_servers, self.config.data_path)
        except McpConfigError as exc:
            log.error("MCP servers not started: %s", exc)
            return {}
        return self.mcp.reload(specs_from_servers(raw))

    def apply_mcp_config(self, pushed: dict) -> dict[str, str]:
        """Store the control plane's ``mcpServers`` mapping and reload (``wire.protocol.Envelope``).

        Returns:
            ``McpManager.status()`` after the reload.

        Raises:
            McpConfigError: ``pushed`` or ``HERMES_MCP_SERVERS`` is not a valid mapping.
        """
        raw = write_pushed(self.config.mcp_servers, self.config.data_path, pushed)
        return self.mcp.reload(specs_from_servers(raw))

    def embedder(self):
        """Return the embedder shared by memory and skills (the bundled MiniLM by default),
        wrapped so one turn's query text is embedded once for both."""
        if self._embedder is None:
            self._embedder = default_embedder(self.config.embedder_dir or None)
        if not isinstance(self._embedder, QueryCachingEmbedder):
            self._embedder = QueryCachingEmbedder(self._embedder)
        return self._embedder

    def memory(self) -> MemoryStore:
        """Return the tenant's ``agent.memory.MemoryStore`` (opened on first use)."""
        with self._memory_lock:
            if self._memory is None:
                self._memory = MemoryStore(self.config.data_path / "memory.db", embedder=self.embedder(),
                                           zone=ZoneInfo(self.config.default_tz))
            # Named dates in memory queries ("yesterday") follow the user's current zone.
            self._memory.zone = ZoneInfo(self.preferences().timezone)
            return self._memory

    def preferences(self) -> Preferences:
        """Return the tenant's dashboard settings (``agent.preferences``), ``HERMES_TZ`` as
        the zone when none is set."""
        return preferences.current(self.history, self.config.default_tz)

    def _model_choice(self) -> str | None:
        """The router's model preference: the chat's ``/model`` choice, else the dashboard's
        when ``/model`` would accept it (an unusable one is ignored, not failed on)."""
        chosen = self.history.pref("model")
        if chosen:
            return chosen
        dashboard = self.preferences().model
        if not dashboard or commands.model_refusal(self.router, dashboard) is not None:
            return None
        # A bare model id goes to the first non-local backend; with none in the chain it
        # would be sent to the local model, which cannot serve it.
        names = {b.name for b in self.router.backends}
        if dashboard.partition(":")[0] not in names and names <= {"local"}:
            return None
        return dashboard

    def tool_services(self) -> dict:
        """Return the services tools may use (``agent.tools.registry.ToolContext.services``)."""
        return {"memory": _LazyMemory(self), "cron": self.cron, "now": self.clock,
                "default_tz": self.preferences().timezone, "config": self.config,
                "tool_permissions": self.tool_permissions}

    def publish(self, event: Event) -> None:
        """Append ``event`` to the tenant's events stream (durable on return).

        ``final`` and ``error`` events carry the idempotency key ``{message_id}:final`` so a
        re-run of a turn never delivers a second reply.
        """
        key = f"{event.message_id}:final" if event.kind in ("final", "error") else None
        self.bus.append(self.events_stream, event.to_json(), idempotency_key=key)

    def close(self) -> None:
        """Close the MCP sessions (stopping stdio servers) and the bus connection of this thread."""
        self.mcp.close()
        self.bus.close()


class QueryCachingEmbedder:
    """Wraps an embedder and remembers the vectors of the last ``size`` single-text queries.

    A turn embeds the user's text twice — memory search and skill matching — at ~10-80 ms of
    CPU each for MiniLM on a small VM; the second lookup is free.  Batches pass through.
    """

    def __init__(self, inner, size: int = 64):
        self.inner = inner
        self.size = size
        self._cache: dict[str, object] = {}
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        """The wrapped embedder's model name (stored with memory databases)."""
        return self.inner.name

    @property
    def dim(self) -> int:
        """The wrapped embedder's vector length."""
        return self.inner.dim

    def embed(self, texts):
        """Embed ``texts`` (see ``agent.memory.Embedder.embed``)."""
        if len(texts) != 1:
            return self.inner.embed(texts)
        with self._lock:
            hit = self._cache.get(texts[0])
        if hit is not None:
            return hit
        vectors = self.inner.embed(texts)
        with self._lock:
            if len(self._cache) >= self.size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[texts[0]] = vectors
        return vectors


class _LazyEmbedder:
    """Defers loading the embedding model until a skill is first matched or learned."""

    def __init__(self, runtime: AgentRuntime):
        self._runtime = runtime

    def embed(self, texts):
        return self._runtime.embedder().embed(texts)


class _LazyMemory:
    """Opens the memory store only when a tool first uses it."""

    def __init__(self, runtime: AgentRuntime):
        self._runtime = runtime

    def __getattr__(self, name):
        return getattr(self._runtime.memory(), name)
