"""The default Claude model is one the installed SDK knows, is not marked deprecated, and is priced.

When the ``anthropic`` SDK marks the default deprecated (it then warns on every call and names
the end-of-life date), these tests fail so the default moves before the model is retired.
"""

from __future__ import annotations

import typing

import anthropic
from anthropic._data import DEPRECATED_MODELS  # the table the SDK's own deprecation warning reads

from agent.config import DEFAULT_ANTHROPIC_MODEL, AgentConfig
from wire.pricing import cost_cents, is_paid


def test_default_model_is_listed_by_the_sdk_and_not_deprecated():
    known = typing.get_args(typing.get_args(anthropic.types.Model)[0])
    assert DEFAULT_ANTHROPIC_MODEL in known
    end_of_life = DEPRECATED_MODELS.get(DEFAULT_ANTHROPIC_MODEL)
    assert end_of_life is None, f"{DEFAULT_ANTHROPIC_MODEL} reaches end of life on {end_of_life}"


def test_default_model_is_priced_and_counts_against_the_budget():
    assert is_paid(DEFAULT_ANTHROPIC_MODEL)
    # Haiku 5.5: $0.10 / $0.50 per million tokens up to 100k prompt tokens, $0.50 / $2.50 above.
    assert cost_cents("claude-haiku-5-5", 1000, 100) == 0.015
    assert cost_cents("claude-haiku-5-5", 200_000, 1000) == 10.25


def test_pinned_older_models_keep_their_prices():
    assert cost_cents("claude-haiku-4-5-20251001", 1000, 100) == 0.15
    assert cost_cents("claude-haiku-4-5", 200_000, 1000) == 20.5  # no long-context tier


def test_an_overridden_price_applies_to_every_prompt_size(tmp_path):
    config = AgentConfig(tenant="t1", data_dir=str(tmp_path),
                         prices_json='{"claude-haiku-5-5": [20, 100]}')
    assert cost_cents("claude-haiku-5-5", 200_000, 1000, config.prices) == 4.1


def test_requests_turn_thinking_off_unless_the_model_cannot(tmp_path):
    from agent.llm.anthropic_backend import AnthropicBackend
    from agent.llm.base import complete_text
    from standins.anthropic_api import AnthropicStandin

    with AnthropicStandin() as api:
        api.script(["plain", "thinks anyway"])
        assert complete_text(AnthropicBackend("k", base_url=api.base_url), "hi") == "plain"
        complete_text(AnthropicBackend("k", base_url=api.base_url, model="claude-opus-5-5"), "hi")
    default, opus = (r["json"] for r in api.requests)
    assert default["thinking"] == {"type": "disabled"}
    assert "thinking" not in opus
