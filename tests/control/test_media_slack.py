"""Slack files in DMs and mentions: downloaded with the workspace's bot token after the event was
acknowledged, stored, and handed to the agent as signed URLs; no token leaves Slack's host."""

from __future__ import annotations

import copy
import json
import time

import pytest
from support.media import OGG, PDF, fetch, inbox, run_media_tasks
from support.slack import TEAM, USER, install, post, slack_settings

from control.db import database
from control.services import linking
from standins.slack_api import SlackApiStandin, published_payload


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def slack_api():
    with SlackApiStandin() as api:
        yield api


@pytest.fixture
def settings(settings, slack_api):
    return slack_settings(settings, slack_api)


@pytest.fixture
def linked(client, tenant):
    install(client)
    with database.connection_context():
        linking.redeem(linking.current_token(tenant, 3600).token, "slack", f"{TEAM}:{USER}", USER)
    return tenant


def _post_event(client, event: dict, event_id: str):
    body = copy.deepcopy(published_payload("event_message_im.json"))
    body.update(team_id=TEAM, event_id=event_id, event=event)
    return post(client, "/webhooks/slack/events", json.dumps(body).encode(), "application/json")


def _file_share(files: list, text: str = "", ts: str = "1355517523.000005") -> dict:
    """A ``message.im`` event with files: subtype ``file_share``, as Slack sends it."""
    event = copy.deepcopy(published_payload("event_message_im.json")["event"])
    event.update(user=USER, text=text, ts=ts, event_ts=ts, subtype="file_share", files=files,
                 upload=False)
    return event


def test_shared_files_reach_the_agent_after_the_event_is_acknowledged(
        client, runtime, slack_api, linked):
    voice = slack_api.add_file(TEAM, OGG, "audio_message.ogg", "audio/ogg")
    document = slack_api.add_file(TEAM, PDF, "plan.pdf", "application/pdf")
    answer = _post_event(client, _file_share([voice, document], "see attached"), "EvF1")
    acknowledged_at = time.monotonic()
    assert answer.json == {"ok": True, "outcome": "published"}
    assert slack_api.file_requests == []
    run_media_tasks(runtime.huey)
    assert all(at > acknowledged_at for _, _, at in slack_api.file_requests)
    [envelope] = inbox(runtime, linked)
    assert envelope.text == "see attached"
    audio, pdf = envelope.attachments
    assert (audio["kind"], audio["mime_type"], pdf["kind"], pdf["name"]) == (
        "audio", "audio/ogg", "document", "plan.pdf")
    assert fetch(client, audio["url"]).data == OGG
    assert fetch(client, pdf["url"]).data == PDF


def test_files_in_a_mention_are_downloaded_too(client, runtime, slack_api, linked):
    shared = slack_api.add_file(TEAM, PDF, "report.pdf", "application/pdf")
    event = copy.deepcopy(published_payload("event_app_mention.json")["event"])
    event.update(user=USER, text="<@U0LAN0Z89> summarise this", files=[shared],
                 channel="C0LAN2Q65", ts="1515449522.000016")
    event.pop("thread_ts", None)
    assert _post_event(client, event, "EvF2").json["outcome"] == "published"
    run_media_tasks(runtime.huey)
    [envelope] = inbox(runtime, linked)
    assert fetch(client, envelope.attachments[0]["url"]).data == PDF


def test_a_sign_in_page_instead_of_the_file_is_unavailable(client, runtime, slack_api, linked):
    shared = slack_api.add_file(TEAM, PDF, "plan.pdf", "application/pdf")
    slack_api.tokens.clear()  # the token no longer opens files (scope removed, app reinstalled)
    _post_event(client, _file_share([shared]), "EvF3")
    assert run_media_tasks(runtime.huey) == 1
    assert inbox(runtime, linked)[0].attachments[0]["error"] == "unavailable"


def test_the_bot_token_is_never_sent_off_slacks_file_host(client, runtime, slack_api, linked):
    shared = slack_api.add_file(TEAM, PDF, "plan.pdf", "application/pdf")
    shared["url_private_download"] = "http://127.0.0.2:9/steal"
    _post_event(client, _file_share([shared]), "EvF4")
    run_media_tasks(runtime.huey)
    assert inbox(runtime, linked)[0].attachments[0]["error"] == "unavailable"
    assert slack_api.file_requests == []
