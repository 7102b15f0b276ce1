"""Why an agent's router sent an LLM call to the backend it did (issue 23, the backend
registry): the agent names the reason in a request header, the LLM gateway records it with the
call (``LlmCall.reason``) so operators can read the selection history.

The vocabulary is fixed and short; the gateway refuses any other value (400), like any input
from a tenant VM.
"""

from __future__ import annotations

ROUTE_REASON_HEADER = "X-Hermes-Route-Reason"

PRIMARY = "primary"
"""The first backend of the configured chain (``quality_first``)."""
COST_FIRST = "cost_first"
"""The cheapest backend, first under the ``cost_first`` policy."""
USER_CHOICE = "user_choice"
"""The backend or model the tenant chose with ``/model``."""
VISION = "vision"
"""Moved ahead because the request carries images and the chain's first backend cannot see."""
FALLBACK_ERROR = "fallback_error"
"""The backends before it failed on this call (after their retries)."""
FALLBACK_CIRCUIT = "fallback_circuit"
"""The backends before it were skipped: their circuit breaker is open."""
BUDGET = "budget"
"""The paid backends before it were skipped: the tenant's daily budget is spent."""

ROUTE_REASONS = frozenset({PRIMARY, COST_FIRST, USER_CHOICE, VISION, FALLBACK_ERROR, FALLBACK_CIRCUIT,
                           BUDGET})
