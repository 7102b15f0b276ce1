"""LLM backends behind one interface (``agent.llm.base.LLMBackend``) and the router over them."""

from agent.llm.base import (
    BudgetExhausted,
    Completion,
    LLMBackend,
    LLMError,
    LLMRequest,
    Notice,
    TextDelta,
    ToolUse,
)
from agent.llm.local_backend import LocalBackend

__all__ = ["BudgetExhausted", "Completion", "LLMBackend", "LLMError", "LLMRequest", "Notice",
           "TextDelta", "ToolUse", "backend_from_config", "router_from_config"]


def backend_from_config(config, name: str | None = None) -> LLMBackend:
    """Return the backend ``name`` (default ``config.llm``): ``anthropic``, ``openai_compat``, ``local``.

    Args:
        config: an ``agent.config.AgentConfig``.
        name: which backend; ``config.model`` applies only to the primary (``config.llm``).
    """
    name = name or config.llm
    model = config.model if name == config.llm else ""
    if name == "anthropic":
        # deferred: the anthropic SDK takes ~1.1 s to import; only chains naming it pay
        from agent.llm.anthropic_backend import AnthropicBackend

        return AnthropicBackend(api_key=config.anthropic_api_key,
                                base_url=config.anthropic_base_url or None, model=model or None)
    if name == "openai_compat":
        # deferred: the openai SDK (~0.5 s) would load on every agent.llm.* import
        from agent.llm.openai_backend import OpenAICompatBackend

        return OpenAICompatBackend(base_url=config.openai_base_url, api_key=config.openai_api_key,
                                   model=model or config.openai_model,
                                   supports_images=config.openai_vision)
    return LocalBackend(model_path=model or None)


def router_from_config(config, usage, preference=lambda: None):
    """Return a ``Router`` over ``config.llm_chain`` for ``config.tenant``.

    Args:
        config: an ``agent.config.AgentConfig``.
        usage: the tenant's ``agent.usage.UsageLedger``.
        preference: returns the tenant's ``/model`` choice or None.
    """
    # deferred: runs on every agent.llm.* import; the router adds redis, prometheus (~0.2 s)
    from agent.llm.router import Router

    return Router([backend_from_config(config, name) for name in config.llm_chain], usage,
                  config.tenant, policy=config.llm_policy,
                  daily_budget_cents=config.daily_budget_cents, prices=config.prices,
                  retries=config.llm_retries, backoff=config.llm_backoff,
                  breaker_fail_max=config.breaker_fail_max, breaker_reset=config.breaker_reset,
                  preference=preference)
