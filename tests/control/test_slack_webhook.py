"""Slack webhooks on bolt: signatures and replays refused, shapes checked, OAuth install with an
encrypted token, linking, routing once per event despite retries, the Home tab and the modal."""

from __future__ import annotations

import copy
import json
import re
import time
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from support.fuzz import examples
from support.slack import SECRET, TEAM, USER, install, post, slack_settings
from support.webhooks import stored_state

from control.db import database
from control.models import ChatIdentity, SlackInstallation
from control.services import linking
from control.services.secrets_box import box_from_settings
from standins.slack_api import SlackApiStandin, oauth_response, published_payload, signed_headers
from wire.protocol import Envelope, messages_stream

TOKEN = oauth_response()["access_token"]
EVENTS, INTERACTIONS, COMMANDS = ("/webhooks/slack/events", "/webhooks/slack/interactions",
                                  "/webhooks/slack/commands")


@pytest.fixture
def slack_api():
    with SlackApiStandin() as api:
        yield api


@pytest.fixture
def settings(settings, slack_api):
    return slack_settings(settings, slack_api)


@pytest.fixture
def installed(client, tenant):
    install(client)
    return tenant


@pytest.fixture
def linked(client, installed, slack_api):
    with database.connection_context():
        token = linking.current_token(installed, 3600).token
    answer = post_command(client, f"link {token}")
    assert answer.json["text"].startswith("Linked!")
    return installed


def post_event(client, event: dict, event_id: str = "Ev0PV52K21", **headers):
    body = copy.deepcopy(published_payload("event_message_im.json"))
    body.update(team_id=TEAM, event_id=event_id, event=event)
    return post(client, EVENTS, json.dumps(body).encode(), "application/json", **headers)


def dm(text: str, ts: str = "1355517523.000005") -> dict:
    event = copy.deepcopy(published_payload("event_message_im.json")["event"])
    event.update(user=USER, text=text, ts=ts, event_ts=ts)
    return event


def post_command(client, text: str, trigger: str | None = None):
    fields = dict(re.findall(r"([^&=]+)=([^&]*)", published_payload("slash_command.txt")))
    fields.update(team_id=TEAM, user_id=USER, command="%2Fhermes", text=quote(text),
                  trigger_id=trigger or f"trig-{time.monotonic_ns()}")
    fields.pop("enterprise_id"), fields.pop("enterprise_name")
    body = "&".join(f"{k}={v}" for k, v in fields.items()).encode()
    return post(client, COMMANDS, body, "application/x-www-form-urlencoded")


def post_interaction(client, payload: dict):
    body = ("payload=" + quote(json.dumps(payload))).encode()
    return post(client, INTERACTIONS, body, "application/x-www-form-urlencoded")


def inbox(runtime, tenant) -> list[Envelope]:
    deliveries = runtime.bus.read([messages_stream(str(tenant.id))], "test-reader", "t", count=100)
    return [Envelope.from_json(d.payload) for d in deliveries]


def test_bad_missing_or_stale_signatures_are_401_and_store_nothing(client, runtime, installed):
    before = stored_state(runtime)
    body = json.dumps({"type": "event_callback", "event_id": "Ev1", "team_id": TEAM,
                       "event": dm("hello")}).encode()
    stale = int(time.time()) - 301  # Slack's replay window is 5 minutes
    for path in (EVENTS, INTERACTIONS, COMMANDS):
        good = signed_headers(body, SECRET)
        cases = [
            signed_headers(body, "not-the-secret"),
            {},
            {"X-Slack-Request-Timestamp": good["X-Slack-Request-Timestamp"]},
            signed_headers(body, SECRET, timestamp=stale),
            {**good, "X-Slack-Request-Timestamp": "soon"},
            {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")},
        ]
        for headers in cases:
            answer = client.post(path, data=body, headers={"Content-Type": "application/json",
                                                           **headers})
            assert answer.status_code == 401, (path, headers)
            assert answer.json["error"] == "unauthorized"
        # A body changed after signing is a forgery too.
        answer = client.post(path, data=body + b" ", headers=good)
        assert answer.status_code == 401
    assert stored_state(runtime) == before


@pytest.mark.parametrize(("path", "body", "content_type"), [
    (EVENTS, b"{oops", "application/json"),
    (EVENTS, b"[]", "application/json"),
    (EVENTS, b'{"type": "event_callback", "event": {"type": "message"}}', "application/json"),
    (EVENTS, b'{"type": "url_verification"}', "application/json"),
    (EVENTS, b"\xff\xfe", "application/json"),
    (INTERACTIONS, b"payload=%7Boops", "application/x-www-form-urlencoded"),
    (INTERACTIONS, b"nothing=here", "application/x-www-form-urlencoded"),
    (INTERACTIONS, b"payload=%5B%5D", "application/x-www-form-urlencoded"),
    (COMMANDS, b"text=hi", "application/x-www-form-urlencoded"),
    (COMMANDS, b"%%%", "application/x-www-form-urlencoded"),
])
def test_malformed_bodies_are_400_and_store_nothing(client, runtime, installed, path, body,
                                                    content_type):
    before = stored_state(runtime)
    answer = post(client, path, body, content_type)
    assert answer.status_code == 400
    assert answer.json["error"] == "bad_request"
    assert stored_state(runtime) == before


def test_url_verification_answers_the_challenge(client):
    body = published_payload("url_verification.json")
    answer = post(client, EVENTS, json.dumps(body).encode(), "application/json")
    assert answer.status_code == 200
    assert answer.json == {"challenge": body["challenge"]}


def test_oauth_install_stores_the_bot_token_encrypted(client, settings, slack_api, runtime):
    state = install(client)
    [call] = slack_api.calls_for("oauth.v2.access")
    assert call.params["code"] == "good-code"
    with database.connection_context():
        [row] = SlackInstallation.select()
        assert (row.installation_key, row.team_id, row.enterprise_id, row.bot_user_id) == (
            TEAM, TEAM, "E12345678", "U0KRQLJ9H")
        assert "chat:write" in row.bot_scopes
        assert TOKEN not in row.bot_token
        assert box_from_settings(settings).decrypt(row.bot_token) == TOKEN
    # The state was single-use: replaying Slack's redirect installs nothing more.
    before = stored_state(runtime)
    answer = client.get(f"/slack/oauth_redirect?code=good-code&state={state}",
                        headers={"Accept": "application/json"})
    assert answer.status_code == 400
    assert stored_state(runtime) == before


def test_unlinked_person_gets_an_ephemeral_answer_and_nothing_is_published(
        client, runtime, installed, slack_api):
    assert post_event(client, dm("hello?")).json["outcome"] == "answered"
    [answer] = slack_api.ephemerals
    assert answer["user"] == USER and "/hermes link" in answer["text"]
    command = post_command(client, "what is on today?")
    assert "/hermes link" in command.json["text"]
    assert command.json["response_type"] == "ephemeral"
    assert inbox(runtime, installed) == []


def test_a_linked_dm_is_published_once_even_when_slack_retries(client, runtime, linked):
    with database.connection_context():
        identity = ChatIdentity.get(ChatIdentity.channel == "slack")
        assert (identity.chat_id, identity.tenant_id) == (f"{TEAM}:{USER}", linked.id)
    assert post_event(client, dm("What's on my calendar?")).json["outcome"] == "published"
    retry = post_event(client, dm("What's on my calendar?"), **{"X-Slack-Retry-Num": "1",
                                                                 "X-Slack-Retry-Reason": "http_timeout"})
    assert retry.status_code == 200 and retry.json["outcome"] == "duplicate"
    [envelope] = inbox(runtime, linked)
    assert (envelope.channel, envelope.chat_id, envelope.sender_id, envelope.text) == (
        "slack", f"{TEAM}:@{USER}", USER, "What's on my calendar?")


def test_a_mention_is_published_for_a_reply_in_its_thread(client, runtime, linked):
    event = copy.deepcopy(published_payload("event_app_mention.json")["event"])
    event.update(user=USER, team=TEAM)
    assert post_event(client, event, event_id="Ev111").json["outcome"] == "published"
    [envelope] = inbox(runtime, linked)
    assert envelope.chat_id == f"{TEAM}:C111:{event['ts']}"
    assert envelope.text == "Hi there!"


def test_hermes_command_acks_thinking_and_publishes_the_question(client, runtime, linked):
    answer = post_command(client, "summarise my week")
    assert answer.status_code == 200
    assert answer.json == {"response_type": "ephemeral",
                           "text": "Thinking… the answer arrives in your DM with Hermes."}
    [envelope] = inbox(runtime, linked)
    assert (envelope.chat_id, envelope.text) == (f"{TEAM}:@{USER}", "summarise my week")


def test_home_tab_shows_link_status_and_the_agent(client, installed, slack_api):
    body = copy.deepcopy(published_payload("event_app_home_opened.json"))
    body.update(team_id=TEAM, enterprise_id=None, authorizations=[])
    body["event"].update(user=USER, tab="home")
    raw = json.dumps(body).encode()
    assert post(client, EVENTS, raw, "application/json").status_code == 200
    assert "Not linked yet" in json.dumps(slack_api.home_views[USER])
    with database.connection_context():
        token = linking.current_token(installed, 3600).token
    post_command(client, f"link {token}")
    body["event_id"] = "Ev112"
    post(client, EVENTS, json.dumps(body).encode(), "application/json")
    home = json.dumps(slack_api.home_views[USER])
    assert "ada@example.com" in home and "ready" in home and "Ask Hermes" in home


def test_shortcut_opens_the_modal_whose_submission_asks_the_agent(client, runtime, linked,
                                                                  slack_api):
    shortcut = copy.deepcopy(published_payload("global_shortcut.json"))
    shortcut["team"]["id"], shortcut["user"]["id"], shortcut["callback_id"] = TEAM, USER, "ask_hermes"
    assert post_interaction(client, shortcut).status_code == 200
    [modal] = slack_api.modals
    assert modal["callback_id"] == "hermes_ask"
    submission = copy.deepcopy(published_payload("view_submission.json"))
    submission["team"] = {"id": TEAM, "domain": "softball"}
    submission["user"]["id"], submission["user"]["team_id"] = USER, TEAM
    submission["view"].update(callback_id="hermes_ask", team_id=TEAM, app_installed_team_id=TEAM,
                              state={"values": {"question": {"text": {
                                  "type": "plain_text_input", "value": "Plan my Friday"}}}})
    answer = post_interaction(client, submission)
    assert answer.status_code == 200
    assert post_interaction(client, submission).status_code == 200  # a double click
    [envelope] = inbox(runtime, linked)
    assert (envelope.chat_id, envelope.text) == (f"{TEAM}:@{USER}", "Plan my Friday")


def test_an_event_from_a_workspace_without_the_app_reaches_no_agent(client, runtime, tenant):
    before = stored_state(runtime)
    answer = post_event(client, dm("hello"))
    assert answer.status_code == 200 and answer.json["outcome"] == "ignored"
    assert stored_state(runtime) == before


def test_bus_outage_answers_503_so_slack_retries_and_records_nothing(client, runtime, linked,
                                                                     monkeypatch):
    from wire.errors import BusUnavailable

    def down(*args, **kwargs):
        raise BusUnavailable("bus down")

    before = stored_state(runtime)
    monkeypatch.setattr(runtime.bus, "append", down)
    assert post_event(client, dm("are you there?")).status_code == 503
    monkeypatch.undo()
    assert stored_state(runtime) == before
    assert post_event(client, dm("are you there?"), **{"X-Slack-Retry-Num": "1"}).json[
        "outcome"] == "published"


def test_slack_off_without_a_signing_secret(tmp_path):
    from control import create_app
    from control.runtime import Runtime
    from control.settings import Settings

    settings = Settings(data_dir=str(tmp_path / "data"))
    app = create_app(settings, Runtime(settings, upgrade_schema=True))
    try:
        client = app.test_client()
        body = json.dumps(published_payload("url_verification.json")).encode()
        assert post(client, EVENTS, body, "application/json").status_code == 401
        assert client.get("/slack/install").status_code == 404
    finally:
        app.extensions["hermes"].close()


def test_the_code_shown_on_the_dashboard_links_slack(client, app):
    from support.dashboard import make_ready, sign_in

    tenant = sign_in(client, "slacker@example.com")
    make_ready(tenant)
    install(app.test_client())
    page = client.get("/dashboard/chats").text
    code = re.search(r"/hermes link ([A-Za-z0-9_-]+)", page).group(1)
    assert post_command(client, f"link {code}").json["text"].startswith("Linked!")
    with database.connection_context():
        assert linking.tenant_for_chat("slack", f"{TEAM}:{USER}").id == tenant.id


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@settings_(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(event=st.fixed_dictionaries({"type": st.sampled_from(["message", "app_mention",
                                                             "app_home_opened"])},
                                   optional={"user": _JSON, "text": _JSON, "ts": _JSON,
                                             "channel": _JSON, "channel_type": _JSON,
                                             "thread_ts": _JSON, "tab": _JSON}),
       body_extra=st.dictionaries(st.sampled_from(["team_id", "enterprise_id", "authorizations"]),
                                  _JSON, max_size=2))
def test_signed_hostile_events_never_500_and_refusals_store_nothing(client, runtime, linked,
                                                                    event, body_extra):
    body = {"type": "event_callback", "team_id": TEAM, "event_id": f"Ev{time.monotonic_ns()}",
            "event": event, **body_extra}
    before = stored_state(runtime)
    answer = post(client, EVENTS, json.dumps(body).encode(), "application/json")
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)
    if answer.status_code == 400:
        assert stored_state(runtime) == before


@settings_(max_examples=examples(60), deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["global_shortcut.json", "view_submission.json", "block_actions.json"]),
       changes=st.dictionaries(st.sampled_from(["user", "team", "view", "trigger_id", "callback_id",
                                                "actions", "channel", "container", "type"]),
                               _JSON, max_size=2))
def test_signed_hostile_interactions_never_500_and_refusals_store_nothing(client, runtime, linked,
                                                                          name, changes):
    payload = copy.deepcopy(published_payload(name))
    payload.update(changes)
    before = stored_state(runtime)
    answer = post_interaction(client, payload)
    assert answer.status_code in (200, 400), answer.get_data(as_text=True)
    if answer.status_code == 400:
        assert stored_state(runtime) == before
