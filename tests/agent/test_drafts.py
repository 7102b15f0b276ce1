"""Drafts before questions (issue 23), end to end through the agent's queue with the Messages
API stand-in scripted: a vague request gets a draft and at most 3 questions in one reply, the
answer gets a revised draft, a clear small request is answered directly, and a model that only
asks still delivers a draft."""

from __future__ import annotations

from agent.drafts import shape, triage
from agent.tasks import AgentTasks
from standins.anthropic_api import Reply, last_user_text, text_reply

DRAFT = "# Bakery business plan\nMorning bread, afternoon pastries; break-even in month 9."
FIVE_QUESTIONS = ("Questions:\n1. Which city is the bakery in?\n2. What is your starting budget?\n"
                  "3. How many staff will you have?\n4. What opening hours?\n5. Any signature bake?")
REVISED = "# Bakery business plan (Lyon, EUR 50k, two staff)\nBreak-even in month 7."


class Model:
    """Answers like a model that follows the agent's system prompt, and records what it saw."""

    def __init__(self, only_asks: bool = False):
        self.only_asks = only_asks
        self.systems: list[str] = []

    def __call__(self, request: dict) -> Reply:
        system = request.get("system") or ""
        system = system if isinstance(system, str) else " ".join(b.get("text", "") for b in system)
        self.systems.append(system)
        text = last_user_text(request)
        if text.startswith("Write a complete, usable first draft"):
            return text_reply(DRAFT)
        if "## Draft first, then ask" in system:
            return text_reply(FIVE_QUESTIONS if self.only_asks else f"{DRAFT}\n\n{FIVE_QUESTIONS}")
        if "## Revise your draft" in system:
            return text_reply(REVISED)
        return text_reply("It is 14:05 in Paris.")


def _finals(helpers, bus, message_id: str) -> list[str]:
    return [e.text for e in helpers.events_for(bus, message_id) if e.kind == "final"]


def test_a_vague_request_gets_a_draft_and_questions_then_a_revised_draft(make_runtime, standin, helpers,
                                                                          consumer_of):
    runtime = make_runtime()
    tasks = AgentTasks(runtime)
    consumer_of(tasks, workers=1)
    model = Model()
    standin.responder = model

    vague = helpers.envelope("write a business plan for my bakery")
    tasks.submit(vague)
    [reply] = helpers.wait_for(lambda: _finals(helpers, runtime.bus, vague.id))
    assert reply.startswith(DRAFT)
    assert reply.endswith("Questions:\n1. Which city is the bakery in?\n2. What is your starting budget?\n"
                          "3. How many staff will you have?")  # one reply, no more than 3 questions
    assert len(standin.requests) == 1

    answer = helpers.envelope("Lyon, 50k euros, two staff")
    tasks.submit(answer)
    [revised] = helpers.wait_for(lambda: _finals(helpers, runtime.bus, answer.id))
    assert revised == REVISED
    assert "1. Which city is the bakery in?" in model.systems[-1]
    assert "write a business plan for my bakery" in model.systems[-1]
    assert runtime.drafts.peek("telegram:chat-1") is None

    clear = helpers.envelope("what time is it in Paris?")
    tasks.submit(clear)
    assert helpers.wait_for(lambda: _finals(helpers, runtime.bus, clear.id)) == ["It is 14:05 in Paris."]
    assert "## Draft first" not in model.systems[-1] and "## Revise" not in model.systems[-1]


def test_a_model_that_only_asks_still_delivers_a_draft(make_runtime, standin, helpers):
    runtime = make_runtime()
    tasks = AgentTasks(runtime)
    standin.responder = Model(only_asks=True)

    reply = tasks.runner.handle(helpers.envelope("plan my wedding"))

    assert reply.startswith(DRAFT) and "\n\nQuestions:\n1. Which city is the bakery in?" in reply
    assert runtime.drafts.peek("telegram:chat-1").request == "plan my wedding"


def test_triage_and_shape():
    assert triage("write a business plan for my bakery").reason == "open"
    assert triage("can you help me plan my trip to Japan").reason == "open"
    assert triage("Write a report covering:\n- sales\n- costs\n- staff").reason == "large"
    assert not triage("what time is it in Paris?").draft
    assert not triage("write a haiku about rain").draft
    assert not triage("plan my day").draft
    shaped = shape("Draft.\n\nWhat is your budget?\nWho is it for?")
    assert (shaped.draft, shaped.questions) == ("Draft.", ("What is your budget?", "Who is it for?"))
