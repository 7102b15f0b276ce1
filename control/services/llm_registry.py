"""The LLM backend registry (issue 23): each backend's health, latency and error rate, and why
each call went where it did, for operators (``/ops/llm``, ``hermes llm backends``, and the
``hermes_llm_backend_*`` Prometheus gauges).

* Health: ``probe`` (a periodic Huey task, ``control.tasks``) asks every provider route the
  operator configured for its model list — ``GET /v1/models`` on Anthropic
  (https://docs.anthropic.com/en/api/models-list), ``GET <root>/models`` on OpenAI-compatible
  roots (https://platform.openai.com/docs/api-reference/models/list) — a free call that checks
  the address, the key and the provider's availability.  One ``LlmBackendHealth`` row per route.
* Performance: a backend is a provider route plus a model (``LlmCall.api``, ``.model``);
  ``stats`` reads the gateway's ``LlmCall`` rows of the last ``WINDOW``: calls, errors (the
  provider's 429 and 5xx, and 502 when it could not be reached: the backend's fault, not the
  agent's), latency p50/p95 (milliseconds until the provider's answer began).
* Selection: ``selections`` lists the latest calls with the reason the agent's router gave
  (``wire.route_reasons``, recorded by the gateway in ``LlmCall.reason``); ``reasons`` counts
  them over the window.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from peewee import fn
from prometheus_client.core import GaugeMetricFamily

from control.db import write_transaction
from control.models import LlmBackendHealth, LlmCall, utcnow

WINDOW = timedelta(hours=1)
"""How far back latency, error rate and reason counts look."""
MAX_ROWS = 50_000
"""At most this many recent calls are read for the percentiles (a bounded page load)."""
PROBE_TIMEOUT = httpx.Timeout(10.0)
ANTHROPIC_VERSION = "2023-06-01"
"""The stable ``anthropic-version`` (Anthropic's versioning docs), as the gateway sends."""


@dataclass(frozen=True)
class BackendStats:
    """One backend (provider route + model) over the window.

    Attributes:
        api: ``anthropic``, ``openai`` or ``transcription``; model: the model id.
        calls, errors: counts; error_rate: errors / calls (0.0-1.0).
        p50_ms, p95_ms: latency percentiles in milliseconds (nearest rank).
        healthy: the route's last probe (None: never probed or not configured).
    """

    api: str
    model: str
    calls: int
    errors: int
    error_rate: float
    p50_ms: int
    p95_ms: int
    healthy: bool | None


def is_error(status: int) -> bool:
    """True for a call that failed on the backend's side: 429, 5xx, or 0 (no answer)."""
    return status == 429 or status >= 500 or status == 0


def _percentile(ordered: list[int], share: float) -> int:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not ordered:
        return 0
    rank = max(1, -(-len(ordered) * share // 1))
    return ordered[int(rank) - 1]


def routes(settings) -> dict[str, tuple[str, dict[str, str]]]:
    """The provider routes the operator configured: ``{api: (probe URL, headers)}``.

    Args:
        settings: ``control.settings.Settings`` (the gateway's ``llm_*`` settings).
    """
    found: dict[str, tuple[str, dict[str, str]]] = {}
    if settings.llm_anthropic_api_key:
        found["anthropic"] = (f"{settings.llm_anthropic_url}/v1/models",
                              {"x-api-key": settings.llm_anthropic_api_key,
                               "anthropic-version": ANTHROPIC_VERSION})
    for api, root, key in (("openai", settings.llm_openai_url, settings.llm_openai_api_key),
                           ("transcription", settings.llm_transcribe_url, settings.llm_transcribe_api_key)):
        if root:
            found[api] = (f"{root}/models", {"authorization": f"Bearer {key}"} if key else {})
    return found


def probe(settings, client: httpx.Client | None = None) -> dict[str, bool]:
    """Probe every configured route once and store the outcome; forget unconfigured routes.

    Args:
        settings: ``control.settings.Settings``.
        client: the HTTP client (default: a new one with ``PROBE_TIMEOUT``).

    Returns:
        ``{api: ok}`` for each route probed.
    """
    targets = routes(settings)
    owned = client is None
    http = client or httpx.Client(timeout=PROBE_TIMEOUT, follow_redirects=False)
    outcome: dict[str, bool] = {}
    try:
        for api, (url, headers) in targets.items():
            started = time.perf_counter()
            try:
                status = http.get(url, headers=headers).status_code
                detail = "" if status == 200 else f"HTTP {status}"
            except httpx.HTTPError as exc:
                status, detail = 0, f"unreachable ({type(exc).__name__})"
            latency = int((time.perf_counter() - started) * 1000)
            outcome[api] = _store(api, status, latency, detail)
    finally:
        if owned:
            http.close()
    with write_transaction():
        LlmBackendHealth.delete().where(LlmBackendHealth.api.not_in(list(targets) or [""])).execute()
    return outcome


def _store(api: str, status: int, latency_ms: int, detail: str) -> bool:
    ok = status == 200
    now = utcnow()
    with write_transaction():
        row = LlmBackendHealth.get_or_none(LlmBackendHealth.api == api) or LlmBackendHealth(api=api)
        row.ok, row.status, row.latency_ms, row.detail, row.checked_at = ok, status, latency_ms, detail, now
        if ok:
            row.last_ok_at = now
        row.save()
    return ok


def health() -> list[LlmBackendHealth]:
    """Every route's last probe, by ``api``."""
    return list(LlmBackendHealth.select().order_by(LlmBackendHealth.api))


def stats(now: datetime | None = None, window: timedelta = WINDOW) -> list[BackendStats]:
    """Per-backend calls, error rate and latency over ``window`` before ``now`` (naive UTC),
    busiest first; backends without calls in the window are left out."""
    since = (now or utcnow()) - window
    rows = (LlmCall.select(LlmCall.api, LlmCall.model, LlmCall.status, LlmCall.latency_ms)
            .where(LlmCall.created_at >= since).order_by(LlmCall.id.desc()).limit(MAX_ROWS)
            .tuples().iterator())
    grouped: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for api, model, status, latency in rows:
        grouped.setdefault((api, model), []).append((status, latency))
    probed = {row.api: row.ok for row in health()}
    out = []
    for (api, model), calls in grouped.items():
        errors = sum(1 for status, _ in calls if is_error(status))
        latencies = sorted(latency for status, latency in calls if not is_error(status))
        out.append(BackendStats(api, model, len(calls), errors, errors / len(calls),
                                _percentile(latencies, 0.5), _percentile(latencies, 0.95),
                                probed.get(api)))
    return sorted(out, key=lambda s: (-s.calls, s.api, s.model))


def reasons(now: datetime | None = None, window: timedelta = WINDOW) -> list[tuple[str, int]]:
    """``[(reason, calls)]`` over ``window``, commonest first (``""``: the agent named none)."""
    since = (now or utcnow()) - window
    count = fn.COUNT(LlmCall.id)
    return [(reason, int(n)) for reason, n in (
        LlmCall.select(LlmCall.reason, count).where(LlmCall.created_at >= since)
        .group_by(LlmCall.reason).order_by(count.desc(), LlmCall.reason).tuples().iterator())]


def selections(limit: int = 50) -> list[LlmCall]:
    """The latest ``limit`` gateway calls, newest first: which backend served each and why."""
    return list(LlmCall.select().order_by(LlmCall.id.desc()).limit(limit))


class RegistryCollector:
    """Prometheus collector of the registry, read at scrape time: ``hermes_llm_backend_up{api}``
    (1/0, the last probe), ``hermes_llm_backend_error_rate{api,model}`` (0-1) and
    ``hermes_llm_backend_latency_ms{api,model,quantile}`` (0.5, 0.95), over ``WINDOW``.

    Args:
        runtime: the ``control.runtime.Runtime`` (its database).
    """

    def __init__(self, runtime):
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        """Yield the three gauges."""
        up = GaugeMetricFamily("hermes_llm_backend_up", "Last health probe of the LLM gateway's "
                               "provider route succeeded (1) or not (0)", labels=["api"])
        errors = GaugeMetricFamily("hermes_llm_backend_error_rate", "Share of the last hour's calls "
                                   "to the backend that failed on its side", labels=["api", "model"])
        latency = GaugeMetricFamily("hermes_llm_backend_latency_ms", "Latency percentile of the last "
                                    "hour's calls to the backend, ms", labels=["api", "model", "quantile"])
        with self.runtime.db.connection_context():
            probed = health()
            rows = stats()
        for row in probed:
            up.add_metric([row.api], 1.0 if row.ok else 0.0)
        for backend in rows:
            errors.add_metric([backend.api, backend.model], backend.error_rate)
            latency.add_metric([backend.api, backend.model, "0.5"], backend.p50_ms)
            latency.add_metric([backend.api, backend.model, "0.95"], backend.p95_ms)
        yield up
        yield errors
        yield latency
