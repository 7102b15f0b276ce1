"""Per-model prices, in US cents per million tokens (chat) or per minute (transcription), and
the cost of one call.  Shared by the agent's router (its own budget view) and the control
plane's LLM gateway (the budget that counts, ``control/services/llm_gateway.py``).

Source: https://www.anthropic.com/pricing and each model's overview page on
platform.claude.com (Claude Haiku 5.5: $0.10 / MTok input, $0.50 / MTok output for prompts up
to 100,000 tokens, $0.50 / $2.50 above; Sonnet 5.5: $2 / $10; Opus 5.5: $4 / $20;
Fable 5.1: $10 / $50; Haiku 4.5: $1 / $5; Sonnet 4.5: $3 / $15; Opus 4.5: $5 / $25).
Older ids stay priced because tenants may still pin them with ``/model``.  Local models cost
nothing.  Unknown models are priced at zero and reported as such.

Transcription: https://openai.com/api/pricing (Whisper: $0.006 per minute of audio).
"""

from __future__ import annotations

PRICES_CENTS_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-5-5": (10.0, 50.0),
    "claude-sonnet-5-5": (200.0, 1000.0),
    "claude-opus-5-5": (400.0, 2000.0),
    "claude-fable-5-1": (1000.0, 5000.0),
    "claude-haiku-4-5": (100.0, 500.0),
    "claude-sonnet-4-5": (300.0, 1500.0),
    "claude-opus-4-5": (500.0, 2500.0),
}

# Long-context rates: ``{model: (prompt tokens, (input, output) cents/MTok)}``; a call whose
# prompt has more input tokens than the threshold is billed wholly at these rates (same source).
LONG_CONTEXT_CENTS_PER_MTOK: dict[str, tuple[int, tuple[float, float]]] = {
    "claude-haiku-5-5": (100_000, (50.0, 250.0)),
}


def cost_cents(model: str, input_tokens: int, output_tokens: int,
               prices: dict[str, tuple[float, float]] | None = None) -> float:
    """Return the cost in cents of a call to ``model``.

    Args:
        model: model id; a dated id such as ``claude-haiku-4-5-20251001`` matches its alias.
        input_tokens, output_tokens: token counts of the call.
        prices: ``{model: (input cents/MTok, output cents/MTok)}``; default the table above.
            A model whose price there is the default one also gets its long-context rates
            (``LONG_CONTEXT_CENTS_PER_MTOK``); an overridden price applies to every prompt size.
    """
    table = PRICES_CENTS_PER_MTOK if prices is None else prices
    match = next((name for name in table if model_matches(name, model)), None)
    if match is None:
        return 0.0
    price_in, price_out = table[match]
    long_context = LONG_CONTEXT_CENTS_PER_MTOK.get(match)
    if long_context and table[match] == PRICES_CENTS_PER_MTOK.get(match) \
            and input_tokens > long_context[0]:
        price_in, price_out = long_context[1]
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


def is_paid(model: str, prices: dict[str, tuple[float, float]] | None = None) -> bool:
    """Return True when ``model`` has a non-zero price (it counts against the tenant's budget)."""
    return cost_cents(model, 1_000_000, 1_000_000, prices) > 0


TRANSCRIBE_CENTS_PER_MINUTE: dict[str, float] = {"whisper-1": 0.6}
"""Transcription model -> US cents per minute of audio (source in the module docstring)."""


def model_matches(name: str, model: str) -> bool:
    """Return True when ``model`` is ``name`` or a dated id of it (``claude-haiku-4-5-20251001``)."""
    return model == name or model.startswith(name + "-")


def transcription_cost_cents(model: str, seconds: float) -> float:
    """Return the cost in cents of transcribing ``seconds`` of audio with ``model`` (0 unknown)."""
    per_minute = next((price for name, price in TRANSCRIBE_CENTS_PER_MINUTE.items()
                       if model_matches(name, model)), 0.0)
    return per_minute * max(0.0, seconds) / 60
