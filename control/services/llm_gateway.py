"""The LLM gateway's rules: per-tenant tokens, each plan's models and daily budget, metering
(issue #19).

No provider key is ever on a tenant VM.  An agent is given the gateway's URLs in the variables
its SDK clients already read (``ANTHROPIC_BASE_URL``, ``OPENAI_BASE_URL``,
``HERMES_TRANSCRIBE_URL``) and its own gateway token as the matching key
(``ANTHROPIC_API_KEY``, ...); ``control/web/llm_gateway.py`` checks the token, the plan's model
list and today's spend, adds the operator's key and forwards to the provider.

The token is ``secrets.token_urlsafe(32)`` (256 bits); only its SHA-256 is stored
(``LlmToken``), a new one is issued at every provisioning (the previous one stops working),
it is deleted at deprovisioning, and it is refused while the tenant is paused, canceled or
deleted.  Spend is the sum of ``LlmCall.cost_cents`` since 00:00 UTC, metered from the
provider's usage fields with ``wire.pricing``.  Calls already running when the budget runs out
finish (the cost is known only afterwards), so a day's spend can overshoot by the calls in
flight.  Nothing here logs a token or a body.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time

from peewee import fn
from werkzeug.datastructures import Headers

from control.db import write_transaction
from control.errors import BadRequest, HermesError, Unauthorized
from control.models import LlmCall, LlmToken, Tenant, TenantStatus, utcnow
from wire.pricing import (
    PRICES_CENTS_PER_MTOK,
    TRANSCRIBE_CENTS_PER_MINUTE,
    cost_cents,
    is_paid,
    model_matches,
    transcription_cost_cents,
)
from wire.route_reasons import ROUTE_REASON_HEADER, ROUTE_REASONS

ANTHROPIC_PATH = "/llm/anthropic"
"""Where the agent's Anthropic SDK is pointed (it appends ``/v1/messages``)."""
OPENAI_PATH = "/llm/openai/v1"
"""Where the agent's OpenAI SDK is pointed (``/chat/completions``, ``/audio/transcriptions``)."""

KEY_OF_URL = {"ANTHROPIC_BASE_URL": "ANTHROPIC_API_KEY", "OPENAI_BASE_URL": "OPENAI_API_KEY",
              "HERMES_TRANSCRIBE_URL": "HERMES_TRANSCRIBE_API_KEY"}
"""Agent variable of a gateway URL -> agent variable that carries the tenant's token with it
(names as in ``agent/config.py``)."""


class BudgetSpent(HermesError):
    """The tenant's plan budget for today (UTC) is spent (429)."""

    status = 429
    code = "budget_spent"


class ModelNotAllowed(HermesError):
    """The tenant's plan does not include the requested model (403)."""

    status = 403
    code = "model_not_allowed"


class NotConfigured(HermesError):
    """The operator configured no provider for this gateway route (503)."""

    status = 503
    code = "llm_not_configured"


class UpstreamUnreachable(HermesError):
    """The provider could not be reached (502; the agent's router fails over)."""

    status = 502
    code = "llm_upstream_unreachable"


@dataclass
class Metered:
    """What one call used, from the provider's usage fields.

    Attributes:
        model: the model that answered (the provider's id), else the requested one.
        input_tokens, output_tokens: token counts.
        audio_seconds: seconds of audio transcribed.
    """

    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0

    def cost_cents(self) -> float:
        """Cost in US cents (``wire.pricing``; unknown models cost 0)."""
        if self.audio_seconds:
            return transcription_cost_cents(self.model, self.audio_seconds)
        return cost_cents(self.model, self.input_tokens, self.output_tokens)

    def add_usage(self, usage: object) -> None:
        """Take the counts of an Anthropic or OpenAI ``usage`` object (others are ignored).

        Anthropic: ``input_tokens``, ``output_tokens`` (cumulative in ``message_delta``);
        OpenAI chat: ``prompt_tokens``, ``completion_tokens``; transcription:
        ``{"type": "duration", "seconds"}`` or ``{"type": "tokens", "input_tokens", ...}``.
        """
        if not isinstance(usage, dict):
            return
        if usage.get("type") == "duration":
            self.audio_seconds = max(self.audio_seconds, _number(usage.get("seconds")))
            return
        self.input_tokens = max(self.input_tokens, int(_number(usage.get("input_tokens")
                                                               or usage.get("prompt_tokens"))))
        self.output_tokens = max(self.output_tokens, int(_number(
            usage.get("output_tokens") or usage.get("completion_tokens"))))


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


class StreamMeter:
    """Reads usage out of a server-sent-events stream as its bytes pass through.

    Anthropic Messages streams carry the model and input tokens in ``message_start`` and the
    output tokens in ``message_delta`` (https://docs.anthropic.com/en/api/messages-streaming);
    OpenAI chat streams carry ``usage`` in a last chunk when ``stream_options.include_usage``
    is set (https://platform.openai.com/docs/api-reference/chat/streaming).  Only ``data:``
    lines mentioning ``usage`` are parsed.

    Args:
        metered: where the counts go.
    """

    def __init__(self, metered: Metered):
        self.metered = metered
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        """Consume the next bytes of the stream (any split)."""
        *lines, self._pending = (self._pending + chunk).split(b"\n")
        for line in lines:
            if line.startswith(b"data:") and b"usage" in line:
                self._event(line[5:])

    def _event(self, data: bytes) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        inner = event.get("message")
        message: dict = inner if isinstance(inner, dict) else event
        if isinstance(message.get("model"), str) and message["model"]:
            self.metered.model = message["model"]
        self.metered.add_usage(message.get("usage"))
        if message is not event:
            self.metered.add_usage(event.get("usage"))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def agent_urls(settings) -> dict[str, str]:
    """The gateway URLs an agent is given, one per configured provider.

    Args:
        settings: ``control.settings.Settings``.

    Returns:
        ``{"ANTHROPIC_BASE_URL": <agent control URL>/llm/anthropic}`` when an Anthropic key is set,
        ``OPENAI_BASE_URL`` when an OpenAI-compatible root is set and ``HERMES_TRANSCRIBE_URL``
        when a transcription root is (both ``<agent control URL>/llm/openai/v1``).
    """
    base = settings.agent_control_url.rstrip("/")
    urls = {}
    if settings.llm_anthropic_api_key:
        urls["ANTHROPIC_BASE_URL"] = base + ANTHROPIC_PATH
    if settings.llm_openai_url:
        urls["OPENAI_BASE_URL"] = base + OPENAI_PATH
    if settings.llm_transcribe_url:
        urls["HERMES_TRANSCRIBE_URL"] = base + OPENAI_PATH
    return urls


def with_token(env: Mapping[str, str], token: str) -> dict[str, str]:
    """Return ``env`` with ``token`` as the key of every gateway URL it carries (``KEY_OF_URL``)."""
    return {**env, **{key: token for url, key in KEY_OF_URL.items() if env.get(url)}}


def issue(tenant_id: int) -> str:
    """Rotate tenant ``tenant_id``'s gateway token: the previous one stops working.

    Returns:
        The new token (for the agent's environment only; never stored or logged).
    """
    token = secrets.token_urlsafe(32)
    with write_transaction():
        LlmToken.delete().where(LlmToken.tenant == tenant_id).execute()
        LlmToken.create(tenant=tenant_id, token_hash=_digest(token), issued_at=utcnow())
    return token


def revoke(tenant_id: int) -> None:
    """Delete tenant ``tenant_id``'s gateway token (deprovisioning)."""
    with write_transaction():
        LlmToken.delete().where(LlmToken.tenant == tenant_id).execute()


def authenticate(token: str) -> Tenant:
    """Return the tenant whose current gateway token ``token`` is.

    Looked up by the SHA-256 of the token (256 random bits: a lookup by its hash leaks
    nothing a guess could use).

    Raises:
        Unauthorized: no token, an unknown or rotated one, or the tenant is paused, canceled,
            deleted or has no plan.
    """
    row = (LlmToken.select(LlmToken, Tenant).join(Tenant)
           .where(LlmToken.token_hash == _digest(token)).first()) if token else None
    tenant = row.tenant if row is not None else None
    if (tenant is None or tenant.status == TenantStatus.CANCELED or tenant.deleted_at is not None
            or tenant.paused_at is not None or tenant.plan not in ("light", "heavy")):
        raise Unauthorized("A valid LLM gateway token is required.", code="bad_llm_token")
    return tenant


def bearer(headers: Mapping[str, str] | Headers) -> str:
    """The token of ``x-api-key`` (Anthropic's SDK) or ``Authorization: Bearer`` (OpenAI's)."""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key", "").strip()


def plan_models(settings, plan: str) -> tuple[str, ...]:
    """The models ``plan`` may call (``HERMES_PLAN_MODELS``, ``*`` = the default list).

    The default list is every model ``wire.pricing`` prices plus the operator's configured
    ``HERMES_MODEL``, ``HERMES_OPENAI_MODEL`` and ``HERMES_TRANSCRIBE_MODEL``.
    """
    configured = settings.llm_plan_models.get(plan, ("*",))
    if "*" not in configured:
        return configured
    extra = (settings.agent_env.get(name, "") for name in
             ("HERMES_MODEL", "HERMES_OPENAI_MODEL", "HERMES_TRANSCRIBE_MODEL"))
    return tuple(dict.fromkeys((*[m for m in configured if m != "*"], *PRICES_CENTS_PER_MTOK,
                                *TRANSCRIBE_CENTS_PER_MINUTE, *filter(None, extra))))


def spent_today_cents(tenant_id: int) -> float:
    """US cents the tenant's gateway calls cost since 00:00 UTC today."""
    midnight = datetime.combine(utcnow().date(), time())
    return float(LlmCall.select(fn.SUM(LlmCall.cost_cents))
                 .where((LlmCall.tenant == tenant_id) & (LlmCall.created_at >= midnight))
                 .scalar() or 0.0)


def admit(settings, tenant: Tenant, model: object, *, audio: bool = False) -> str:
    """Check that ``tenant`` may call ``model`` now; return the model id.

    Args:
        settings: ``control.settings.Settings`` (``llm_plan_models``, ``plan_budget_cents``).
        tenant: from ``authenticate``.
        model: the request's ``model`` field.
        audio: a transcription (priced per minute, ``wire.pricing``).

    Raises:
        BadRequest: ``model`` is missing or not a string.
        ModelNotAllowed: the plan does not include it.
        BudgetSpent: it is a paid model and the plan's daily budget (cents, 0 = none) is spent.
    """
    if not isinstance(model, str) or not model.strip():
        raise BadRequest("The request needs a model.", code="invalid_request")
    if not any(model_matches(name, model) for name in plan_models(settings, str(tenant.plan))):
        raise ModelNotAllowed(f"The model {model!r} is not included in the {tenant.plan} plan.")
    budget = settings.plan_budget_cents.get(tenant.plan, 0)
    paid = transcription_cost_cents(model, 60) > 0 if audio else is_paid(model)
    if budget and paid and spent_today_cents(tenant.id) >= budget:
        raise BudgetSpent(f"Today's LLM budget of the {tenant.plan} plan ({budget} cents) is "
                          f"spent; it resets at 00:00 UTC.")
    return model


def route_reason(headers: Mapping[str, str] | Headers) -> str:
    """The agent's reason for choosing this backend (``wire.route_reasons``), from its
    ``X-Hermes-Route-Reason`` header; ``""`` when absent (an agent that names none).

    Raises:
        BadRequest: the header is present but not one of ``ROUTE_REASONS`` (the value is not
            echoed: it comes from a tenant VM).
    """
    value = headers.get(ROUTE_REASON_HEADER)
    if value is None:
        return ""
    if value not in ROUTE_REASONS:
        raise BadRequest(f"{ROUTE_REASON_HEADER} must be one of {', '.join(sorted(ROUTE_REASONS))}.",
                         code="invalid_request")
    return value


def record(tenant_id: int, api: str, status: int, metered: Metered, latency_ms: int,
           reason: str = "") -> LlmCall:
    """Store one metered call (``LlmCall``) and return it.

    Args:
        tenant_id: whose call.
        api: ``anthropic``, ``openai`` or ``transcription``.
        status: the HTTP status the agent got.
        metered: the provider's usage (zero counts for a failed call).
        latency_ms: until the provider's answer arrived.
        reason: from ``route_reason`` (already validated).
    """
    return LlmCall.create(tenant=tenant_id, api=api, model=metered.model[:255], status=status,
                          input_tokens=metered.input_tokens, output_tokens=metered.output_tokens,
                          audio_seconds=metered.audio_seconds, cost_cents=metered.cost_cents(),
                          latency_ms=latency_ms, reason=reason)
