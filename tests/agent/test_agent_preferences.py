"""The dashboard's settings on envelopes, as the agent applies them (``agent.preferences``)."""

from __future__ import annotations

import dataclasses

from agent.turn import TurnRunner
from wire.protocol import Envelope


def _turn(runtime, helpers, text: str, preferences: dict | None) -> str:
    env = dataclasses.replace(helpers.envelope(text), preferences=preferences)
    return TurnRunner(runtime).handle(env)


def _cron_zone(runtime, helpers, preferences: dict | None) -> str:
    reply = _turn(runtime, helpers, '/cron add "0 8 * * *" water the plants', preferences)
    assert reply.startswith("Scheduled"), reply
    return runtime.cron.list()[-1].tz


def test_time_zone_follows_the_newest_envelope_and_cron_runs_keep_it(make_runtime, helpers):
    runtime = make_runtime(default_tz="UTC")
    assert _cron_zone(runtime, helpers, None) == "UTC"
    assert _cron_zone(runtime, helpers, {"timezone": "Europe/Berlin"}) == "Europe/Berlin"
    # An envelope without settings (a cron run, an older control plane) keeps the stored ones.
    assert _cron_zone(runtime, helpers, None) == "Europe/Berlin"
    assert runtime.tool_services()["default_tz"] == "Europe/Berlin"
    assert str(runtime.memory().zone) == "Europe/Berlin"
    # A zone the agent cannot load falls back to HERMES_TZ instead of failing the turn.
    assert _cron_zone(runtime, helpers, {"timezone": "Not/A_Zone"}) == "UTC"
    # Every setting cleared on the dashboard: an empty dict.
    assert _cron_zone(runtime, helpers, {"timezone": "Asia/Tokyo"}) == "Asia/Tokyo"
    assert _cron_zone(runtime, helpers, {}) == "UTC"


def test_dashboard_model_is_used_only_when_model_would_accept_it(make_runtime, helpers):
    runtime = make_runtime()
    _turn(runtime, helpers, "/help", {"model": "claude-haiku-4-5"})
    assert runtime.router.ordered()[0][1] == "claude-haiku-4-5"
    _turn(runtime, helpers, "/help", {"model": "claude-unpriced-9"})  # no price: budget could not stop it
    assert runtime.router.ordered()[0][1] is None
    # A /model choice made in the chat takes precedence over the dashboard's.
    _turn(runtime, helpers, "/help", {"model": "claude-haiku-4-5"})
    _turn(runtime, helpers, "/model claude-opus-4-5", {"model": "claude-haiku-4-5"})
    assert runtime.router.ordered()[0][1] == "claude-opus-4-5"


def test_settings_go_into_the_system_prompt_only_when_set(make_runtime, helpers, standin):
    runtime = make_runtime()
    _turn(runtime, helpers, "hello", None)
    assert "The user's settings" not in standin.requests[-1]["json"]["system"]
    _turn(runtime, helpers, "hello again", {"timezone": "America/Sao_Paulo", "language": "pt-BR",
                                            "about": "I teach maths.\nShort answers, please."})
    system = standin.requests[-1]["json"]["system"]
    assert "Time zone: America/Sao_Paulo (today is " in system
    assert "'pt-BR'" in system
    assert "  > I teach maths.\n  > Short answers, please." in system


def test_old_envelopes_without_the_field_still_parse():
    old = ('{"v": 1, "type": "envelope", "id": "e1", "tenant": "t1", "channel": "telegram", '
           '"chat_id": "1", "sender_id": "2", "text": "hi"}')
    assert Envelope.from_json(old).preferences is None
    new = Envelope(id="e2", tenant="t1", channel="web", chat_id="web-1", sender_id="a", text="x",
                   preferences={"timezone": "Europe/Paris"})
    assert Envelope.from_json(new.to_json()).preferences == {"timezone": "Europe/Paris"}
