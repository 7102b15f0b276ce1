"""The router names why each call went to its backend (issue 23), in the header the LLM
gateway records: the chain's first, the cheapest under ``cost_first``, the user's ``/model``,
a fallback after an error, and the free backend once the daily budget is spent.  Real SDK
clients against the Anthropic and OpenAI-compatible stand-ins."""

from __future__ import annotations

import pytest

from agent.llm.anthropic_backend import AnthropicBackend
from agent.llm.openai_backend import OpenAICompatBackend
from agent.llm.router import Router
from agent.usage import UsageLedger
from standins.anthropic_api import AnthropicStandin, error_reply
from standins.openai_api import OpenAIStandin
from wire.route_reasons import ROUTE_REASON_HEADER


@pytest.fixture
def apis():
    with AnthropicStandin() as claude, OpenAIStandin() as local:
        yield claude, local


def _router(path, claude, local, **options) -> Router:
    """A router over Claude then a free local model, with its own usage ledger at ``path``."""
    return Router([AnthropicBackend("k", base_url=claude.base_url, model="claude-haiku-4-5"),
                   OpenAICompatBackend(base_url=local.base_url, model="local-free")],
                  UsageLedger(path), "t1", retries=1, sleep=lambda s: None, **options)


def _reasons(standin) -> list[str]:
    return [{k.lower(): v for k, v in r["headers"].items()}.get(ROUTE_REASON_HEADER.lower(), "")
            for r in standin.requests]


def test_each_call_says_why_it_went_where_it_did(tmp_path, apis):
    claude, local = apis
    ledger = tmp_path / "usage.db"
    _router(ledger, claude, local).complete("hi")
    _router(ledger, claude, local, policy="cost_first").complete("hi")
    _router(ledger, claude, local, preference=lambda: "openai_compat").complete("hi")
    claude.script([error_reply(500)])
    _router(ledger, claude, local).complete("hi")
    spent = _router(tmp_path / "fresh.db", claude, local, daily_budget_cents=0.000001)
    spent.complete("hi")  # the first call spends the tiny budget
    spent.complete("hi again")

    assert _reasons(claude) == ["primary", "primary", "primary"]
    assert _reasons(local) == ["cost_first", "user_choice", "fallback_error", "budget"]
