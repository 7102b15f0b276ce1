"""End to end on Slack: `hermes serve` as a subprocess, a paid signup, the app installed with
OAuth, `/hermes link`, a DM answered by the agent (posted, then updated as the Anthropic
stand-in streams) and an @mention answered in its thread.

Only the internet's edge is replaced: Slack's Web API, Telegram's Bot API and Anthropic's
Messages API by local stand-ins speaking their wire formats; Slack's requests are signed with
Slack's v0 scheme from Slack's published payloads.
"""

from __future__ import annotations

import copy
import json
import re
from urllib.parse import quote

import pytest
from support.serve import ServeProcess, wait_until

from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, last_user_text, text_reply
from standins.slack_api import SlackApiStandin, oauth_response, published_payload, signed_headers
from standins.telegram_bot_api import TelegramBotApiStandin

SECRET = "e2e-slack-signing-secret"
TEAM = oauth_response()["team"]["id"]
USER = "U2147483697"


def streamed(request: dict):
    """Answer ``echo: <text>`` in small pieces over about two seconds, so deltas stream."""
    return text_reply(f"echo: {last_user_text(request)} - and that is all", chunk=6,
                      chunk_delay=0.25)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with SlackApiStandin() as slack, TelegramBotApiStandin() as telegram, \
            AnthropicStandin(responder=streamed) as anthropic:
        serve = ServeProcess(tmp_path_factory.mktemp("slack-e2e"), telegram, anthropic, extra_env={
            "SLACK_SIGNING_SECRET": SECRET, "SLACK_CLIENT_ID": slack.client_id,
            "SLACK_CLIENT_SECRET": slack.client_secret, "SLACK_API_BASE": slack.base_url})
        yield serve, slack
        serve.stop()


def post(serve, path: str, body: bytes, content_type: str):
    return serve.http.post(path, content=body,
                           headers=signed_headers(body, SECRET, content_type=content_type))


def event(serve, event: dict, event_id: str):
    body = copy.deepcopy(published_payload("event_message_im.json"))
    body.update(team_id=TEAM, event_id=event_id, event=event)
    return post(serve, "/webhooks/slack/events", json.dumps(body).encode(), "application/json")


def test_a_slack_user_links_and_converses_with_their_agent(stack):
    serve, slack = stack
    email = "slack-user@example.com"
    assert serve.stripe(se.subscription_created(customer="cus_slack", subscription="sub_slack",
                                                plan="light", event_id="evt_s_slack")).status_code == 200
    assert serve.stripe(se.checkout_completed(email=email, customer="cus_slack",
                                              subscription="sub_slack",
                                              event_id="evt_c_slack")).status_code == 200
    printed = wait_until(lambda: (r := serve.cli("tenants", "link-token", email)).returncode == 0
                         and r.stdout, 180, "the machine to become ready")
    token = printed.split("token:")[1].split()[0]

    # Install the app with OAuth, as a workspace admin would.
    # bolt binds the state to a Secure cookie, which a browser returns over https; httpx keeps
    # Secure cookies off plain http, so the test returns it as the browser would.
    page = serve.http.get("/slack/install")
    state = re.search(r"state=([A-Za-z0-9_-]+)", page.text).group(1)
    cookie = page.headers["set-cookie"].split(";")[0]
    done = serve.http.get(f"/slack/oauth_redirect?code=good-code&state={state}",
                          headers={"Cookie": cookie})
    assert done.status_code == 200, done.text

    # Link with the same single-use code as Telegram's, through /hermes link.
    form = (f"team_id={TEAM}&user_id={USER}&command=%2Fhermes&text={quote('link ' + token)}"
            f"&channel_id=D024BE91L&trigger_id=1.2.link")
    linked = post(serve, "/webhooks/slack/commands", form.encode(), "application/x-www-form-urlencoded")
    assert linked.json()["text"].startswith("Linked!")

    # A DM: the reply is posted in the DM, then updated as the stand-in streams.
    dm = copy.deepcopy(published_payload("event_message_im.json")["event"])
    dm.update(user=USER, text="hello from slack")
    assert event(serve, dm, "EvDM1").json()["outcome"] == "published"
    expected = "echo: hello from slack - and that is all"
    wait_until(lambda: any(m.text == expected for ch in _dm_channels(slack)
                           for m in slack.channel_messages(ch)), 90, "the DM reply")
    [reply] = [m for ch in _dm_channels(slack) for m in slack.channel_messages(ch)]
    assert len(reply.history) >= 2 and reply.history[-1] == expected  # posted, then updated
    assert slack.calls_for("chat.update")

    # An @mention in a channel: the reply goes into the mention's thread.
    mention = copy.deepcopy(published_payload("event_app_mention.json")["event"])
    mention.update(user=USER, team=TEAM, text="<@U0KRQLJ9H> what about channels?")
    assert event(serve, mention, "EvMention1").json()["outcome"] == "published"
    wait_until(lambda: any(m.text.startswith("echo: what about channels?")
                           for m in slack.channel_messages("C111")), 90, "the threaded reply")
    [threaded] = slack.channel_messages("C111")
    assert threaded.thread_ts == mention["ts"]


def _dm_channels(slack) -> set[str]:
    return {c.params["channel"] for c in slack.calls_for("chat.postMessage")
            if str(c.params.get("channel", "")).startswith("D")}
