"""Per-model token prices, in US cents per million tokens, and cost of one call.

Source: https://www.anthropic.com/pricing (Claude Haiku 4.5: $1 / MTok input, $5 / MTok output;
Sonnet 4.5: $3 / $15; Opus 4.5: $5 / $25).  Local models cost nothing.  Unknown models are priced at zero and
reported as such.
"""

from __future__ import annotations

PRICES_CENTS_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (100.0, 500.0),
    "claude-sonnet-4-5": (300.0, 1500.0),
    "claude-opus-4-5": (500.0, 2500.0),
}


def cost_cents(model: str, input_tokens: int, output_tokens: int,
               prices: dict[str, tuple[float, float]] | None = None) -> float:
    """Return the cost in cents of a call to ``model``.

    Args:
        model: model id; a dated id such as ``claude-haiku-4-5-20251001`` matches its alias.
        input_tokens, output_tokens: token counts of the call.
        prices: ``{model: (input cents/MTok, output cents/MTok)}``; default the table above.
    """
    table = PRICES_CENTS_PER_MTOK if prices is None else prices
    match = next((name for name in table if model == name or model.startswith(name + "-")), None)
    if match is None:
        return 0.0
    price_in, price_out = table[match]
    return (input_tokens * price_in + output_tokens * price_out) / 1_000_000


def is_paid(model: str, prices: dict[str, tuple[float, float]] | None = None) -> bool:
    """Return True when ``model`` has a non-zero price (it counts against the tenant's budget)."""
    return cost_cents(model, 1_000_000, 1_000_000, prices) > 0
