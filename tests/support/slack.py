"""Slack test helpers (test_slack_webhook.py, test_media_slack.py): the app pointed at the Web API
stand-in, and the OAuth install as a person runs it."""

from __future__ import annotations

import re

from standins.slack_api import oauth_response, signed_headers

SECRET = "slack-signing-secret"
TEAM = oauth_response()["team"]["id"]  # the workspace of Slack's published oauth.v2.access answer
USER = "U2147483697"


def slack_settings(settings, api):
    """``settings`` with the signing secret ``SECRET`` and the OAuth client and API base of the
    ``SlackApiStandin`` ``api``."""
    return settings.with_overrides(
        slack_signing_secret=SECRET, slack_client_id=api.client_id,
        slack_client_secret=api.client_secret, slack_api_base=api.base_url)


def install(client) -> str:
    """Run the OAuth install as a person would: the Add to Slack page, then Slack's redirect
    with a code; return the state it used."""
    page = client.get("/slack/install")
    assert page.status_code == 200
    state = re.search(r"state=([A-Za-z0-9_-]+)", page.get_data(as_text=True)).group(1)
    answer = client.get(f"/slack/oauth_redirect?code=good-code&state={state}")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return state


def post(client, path: str, body: bytes, content_type: str, **headers):
    """POST ``body`` to ``path`` signed with ``SECRET`` as Slack signs, plus ``headers``."""
    signed = signed_headers(body, SECRET, content_type=content_type)
    return client.post(path, data=body, headers={**signed, **headers})
