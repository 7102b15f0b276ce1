"""Skills: learned after a task of more than 3 tool steps, reused on a paraphrased request,
refined after a successful run with it."""

from __future__ import annotations

from agent.skills.document import parse
from agent.turn import TurnRunner
from standins.anthropic_api import text_reply, tool_reply

REQUEST = "Check the current time in Tokyo and New York and work out the time difference between them"
PARAPHRASE = "What's the time difference between Tokyo and New York right now? Check both clocks."

FOUR_STEPS = [
    tool_reply(("current_time", {"tz": "Asia/Tokyo"})),
    tool_reply(("current_time", {"tz": "America/New_York"})),
    tool_reply(("calculate", {"expression": "9 - (-4)"})),
    tool_reply(("calculate", {"expression": "24 - 13"})),
    text_reply("Tokyo is 13 hours ahead of New York."),
]


def test_a_four_step_task_becomes_a_skill_and_a_paraphrase_reuses_it(make_runtime, standin, helpers):
    runtime = make_runtime()
    standin.script(FOUR_STEPS)
    TurnRunner(runtime).handle(helpers.envelope(REQUEST))

    [skill] = runtime.skills.list()
    document = skill.path.read_text()
    assert skill.path == runtime.config.data_path / "skills" / skill.name / "SKILL.md"
    parsed = parse(document)
    assert (parsed.name, parsed.version) == (skill.name, "1.0.0")
    assert parsed.description == REQUEST
    assert '1. Call `current_time` with `{"tz": "Asia/Tokyo"}`' in document
    assert "4. Call `calculate`" in document

    standin.script([tool_reply(("current_time", {"tz": "Asia/Tokyo"})),
                    tool_reply(("current_time", {"tz": "America/New_York"})),
                    text_reply("Still 13 hours.")])
    TurnRunner(runtime).handle(helpers.envelope(PARAPHRASE))
    system = standin.requests[len(FOUR_STEPS)]["json"]["system"]
    assert "## Skill to follow" in system and f"name: {skill.name}" in system

    [refined] = runtime.skills.list()
    assert refined.version == "1.1.0"
    assert "- 1.1.0 (" in refined.body and "What's the time difference" in refined.body


def test_short_tasks_and_unrelated_requests_do_not_make_or_match_skills(make_runtime, standin, helpers):
    runtime = make_runtime()
    standin.script([tool_reply(("current_time", {})), text_reply("It is noon.")])
    TurnRunner(runtime).handle(helpers.envelope("What time is it?"))
    assert runtime.skills.list() == []

    standin.script(FOUR_STEPS)
    TurnRunner(runtime).handle(helpers.envelope(REQUEST))
    standin.script(["Sure, plants it is."])
    TurnRunner(runtime).handle(helpers.envelope("Remind me to water the plants every morning"))
    assert "## Skill to follow" not in standin.requests[-1]["json"]["system"]
    assert [s.version for s in runtime.skills.list()] == ["1.0.0"]


def test_a_close_existing_skill_is_not_duplicated(make_runtime, standin, helpers):
    runtime = make_runtime()
    standin.script(FOUR_STEPS)
    TurnRunner(runtime).handle(helpers.envelope(REQUEST))
    standin.script(FOUR_STEPS)
    TurnRunner(runtime).handle(helpers.envelope(PARAPHRASE))
    [skill] = runtime.skills.list()
    assert skill.version == "1.1.0"
