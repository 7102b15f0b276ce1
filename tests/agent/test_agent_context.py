"""Context assembly under a token budget: recent history kept, older history summarised once."""

from __future__ import annotations

from agent.context import ContextBuilder, estimate_tokens
from agent.history import History
from agent.turn import TurnRunner

KEY = "telegram:chat-1"


def _fill(history: History, exchanges: int, size: int = 400) -> None:
    for n in range(exchanges):
        history.record_exchange(KEY, f"e{n}", f"question {n}: " + "q" * size, f"answer {n}: " + "a" * size)


def test_over_budget_history_is_summarised_and_recent_turns_kept(make_runtime, standin, helpers):
    runtime = make_runtime(context_tokens=3000, max_tokens=500)
    _fill(runtime.history, 20)
    standin.script(["SUMMARY: the user asked twenty numbered questions.", "Here is my answer."])
    env = helpers.envelope("and what about question 21?")
    TurnRunner(runtime).handle(env)

    summary_request, turn_request = standin.requests[0]["json"], standin.requests[1]["json"]
    assert "question 0:" in summary_request["messages"][0]["content"]
    assert "## Earlier in this conversation (summary)\nSUMMARY: the user asked" in turn_request["system"]
    messages = turn_request["messages"]
    assert messages[0]["role"] == "user" and messages[-1]["content"] == "and what about question 21?"
    assert "answer 19:" in messages[-2]["content"] and not any("question 0:" in m["content"] for m in messages)
    tokens = estimate_tokens(turn_request["system"]) + sum(estimate_tokens(m["content"]) for m in messages)
    assert tokens <= 3000 - 500
    final = helpers.events_for(runtime.bus, env.id)[-1]
    assert [c["purpose"] for c in final.usage["calls"]] == ["summary", "turn"]

    standin.script(["Another answer."])
    TurnRunner(runtime).handle(helpers.envelope("thanks"))
    assert len(standin.requests) == 3  # nothing new fell out of the window: the summary is reused
    assert "SUMMARY: the user asked" in standin.requests[2]["json"]["system"]


def test_a_long_conversation_fits_a_200k_context_without_summary(tmp_path):
    history = History(tmp_path / "history.db")
    _fill(history, 100, size=2000)  # ~100k tokens
    builder = ContextBuilder(history, budget_tokens=200_000 - 1024)
    context = builder.build(KEY, "next question")
    assert context.summarised == 0 and len(context.messages) == 201
    assert 90_000 < context.tokens < 180_000


def test_summariser_failure_falls_back_to_an_extractive_summary(tmp_path):
    history = History(tmp_path / "history.db")
    _fill(history, 30)

    def broken(prompt):
        raise RuntimeError("model down")

    context = ContextBuilder(history, budget_tokens=2000, summarise=broken).build(KEY, "hi")
    assert context.summarised > 0 and "## Earlier in this conversation (summary)" in context.system
    assert history.summary(KEY) is not None
