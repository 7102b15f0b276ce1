"""End to end with files (issue #12): `hermes serve` as a subprocess and a real agent, for paid,
linked users who send a WhatsApp voice note, a Telegram photo without a caption and a PDF in a
Slack DM.

The whole production path runs: the signed webhook is acknowledged, the control plane's
``ingest_media`` task downloads the file from the platform and stores it, the agent fetches it
from the signed ``/media/<token>`` URL, transcribes voice with the Whisper API, sends images to
Claude as image blocks and reads PDFs, and the delivery worker posts the answer in the chat.

Only the internet's edge is replaced, by local stand-ins speaking the real wire formats: the
WhatsApp Graph API (messages and media), Telegram's Bot API (``getFile`` and the file route),
Slack's Web API and file host, Anthropic's Messages API and OpenAI's
``/v1/audio/transcriptions``.  The files are real: an Ogg/Opus recording made by ffmpeg, a PNG
and a PDF with a text layer; webhooks are the published payloads, signed as each platform signs.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import sqlite3
from contextlib import closing
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from support.agent_media import FFMPEG, audio, pdf, png
from support.serve import ServeProcess, wait_until

from control.channels.whatsapp import link_url
from standins import slack_api as slack_standin
from standins import stripe_events as se
from standins.anthropic_api import AnthropicStandin, image_blocks, last_user_text, text_reply
from standins.openai_api import OpenAIStandin
from standins.slack_api import SlackApiStandin, oauth_response, signed_headers
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import published_update, text_update
from standins.whatsapp_api import WhatsAppApiStandin, message_body, status_body
from standins.whatsapp_api import signed_headers as whatsapp_headers

WA_SECRET, WA_VERIFY, WA_NUMBER = "e2e-whatsapp-app-secret", "e2e-verify", "15550783881"
WA_USER = "972987654321"  # the sender of the published voice note
SLACK_SECRET = "e2e-slack-signing-secret"
TEAM = oauth_response()["team"]["id"]
SLACK_USER = "U2147483697"

TRANSCRIPT = "Remind me to buy oat milk tomorrow morning"
VOICE_ANSWER = "Done: I will remind you tomorrow at 8:00 to buy oat milk."
IMAGE_ANSWER = "A plain red square, nothing else in the picture."
PDF_FACT = "Invoice 2026-117 total due 4,180 EUR by 15 January"
PDF_ANSWER = "The invoice asks for 4,180 EUR by 15 January."


def responder(request: dict):
    """Claude's side: a fixed answer per scenario, recognised by what the agent sent."""
    text = last_user_text(request)
    if image_blocks(request):
        return text_reply(IMAGE_ANSWER)
    if TRANSCRIPT in text:
        return text_reply(VOICE_ANSWER)
    if PDF_FACT in text:
        return text_reply(PDF_ANSWER)
    return text_reply(f"echo: {text}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with TelegramBotApiStandin() as telegram, AnthropicStandin(responder=responder) as anthropic, \
            OpenAIStandin() as openai, WhatsAppApiStandin() as whatsapp, SlackApiStandin() as slack:
        env = {"WHATSAPP_APP_SECRET": WA_SECRET, "WHATSAPP_VERIFY_TOKEN": WA_VERIFY,
               "WHATSAPP_ACCESS_TOKEN": whatsapp.access_token,
               "WHATSAPP_PHONE_NUMBER_ID": whatsapp.phone_number_id,
               "WHATSAPP_BUSINESS_NUMBER": WA_NUMBER, "WHATSAPP_API_BASE": whatsapp.base_url,
               "HERMES_TRANSCRIBE_URL": openai.base_url, "HERMES_TRANSCRIBE_API_KEY": "sk-e2e",
               "SLACK_SIGNING_SECRET": SLACK_SECRET, "SLACK_CLIENT_ID": slack.client_id,
               "SLACK_CLIENT_SECRET": slack.client_secret, "SLACK_API_BASE": slack.base_url}
        serve = ServeProcess(tmp_path_factory.mktemp("media-e2e"), telegram, anthropic, extra_env=env)
        yield serve, telegram, anthropic, openai, whatsapp, slack
        serve.stop()


def paid_link_token(serve, email: str, customer: str) -> str:
    """Pay for the light plan as ``email``; return the link token once the machine is ready."""
    for event in (se.subscription_created(customer=customer, subscription=f"sub_{customer}",
                                          plan="light", event_id=f"evt_s_{customer}"),
                  se.checkout_completed(email=email, customer=customer,
                                        subscription=f"sub_{customer}", event_id=f"evt_c_{customer}")):
        assert serve.stripe(event).status_code == 200
    printed = wait_until(lambda: (r := serve.cli("tenants", "link-token", email)).returncode == 0
                         and r.stdout, 180, f"{email}'s machine to become ready")
    return printed.split("token:")[1].split()[0]


def post_whatsapp(serve, body: dict):
    raw = json.dumps(body).encode()
    return serve.http.post("/webhooks/whatsapp", content=raw, headers=whatsapp_headers(raw, WA_SECRET))


def ledger_row(serve, wamid: str) -> dict | None:
    """The delivery ledger's row of the WhatsApp reply sent as ``wamid`` (``state``,
    ``platform_status``), read from the subprocess's SQLite control database."""
    with closing(sqlite3.connect(f"file:{serve.data_dir / 'control.db'}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT state, platform_status FROM delivery WHERE channel = 'whatsapp' "
                         "AND platform_message_id = ?", (wamid,)).fetchone()
    return dict(row) if row else None


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed (.ci/run installs it)")
def test_a_whatsapp_voice_note_is_transcribed_answered_and_marked_delivered(stack):
    serve, _telegram, _anthropic, openai, whatsapp, _slack = stack
    token = paid_link_token(serve, "wa-voice@example.com", "cus_wa_voice")

    # Link by sending the text the dashboard's wa.me link prefills.
    prefilled = parse_qs(urlsplit(link_url(WA_NUMBER, token)).query)["text"][0]
    linked = post_whatsapp(serve, message_body(wa_id=WA_USER, text=prefilled))
    assert linked.status_code == 200, linked.text
    wait_until(lambda: any(t.startswith("Linked!") for t in whatsapp.texts_to(WA_USER)), 30,
               "the link confirmation on WhatsApp")

    # The published voice note, its media served by the Graph API as real Ogg/Opus bytes.
    recording = audio(1.5)
    body = message_body("message_voice.json", wa_id=WA_USER)
    media_id = body["entry"][0]["changes"][0]["value"]["messages"][0]["audio"]["id"]
    whatsapp.add_media(media_id, recording, "audio/ogg; codecs=opus")
    openai.transcripts[hashlib.sha256(recording).hexdigest()] = TRANSCRIPT
    answer = post_whatsapp(serve, body)
    assert answer.status_code == 200 and answer.json()["messages"] == ["published"], answer.text

    reply = wait_until(lambda: next((m for m in whatsapp.sent
                                     if m.to == WA_USER and VOICE_ANSWER in m.text), None),
                       120, "the answer to the voice note")
    assert reply.text.splitlines()[0] == f"🎙️ “{TRANSCRIPT}”"
    [transcription] = openai.transcriptions
    assert transcription["sha256"] == hashlib.sha256(recording).hexdigest()  # the bytes sent
    assert transcription["fields"]["model"] == "whisper-1"

    # The delivery worker records the wamid the Graph API answered; then Meta reports the reply
    # delivered to the phone, and the ledger records that too.
    assert wait_until(lambda: ledger_row(serve, reply.wamid), 10, "the reply in the ledger") == {
        "state": "delivered", "platform_status": None}
    status = post_whatsapp(serve, status_body(reply.wamid, "delivered", WA_USER))
    assert status.status_code == 200 and status.json()["statuses"] == ["recorded"], status.text
    assert ledger_row(serve, reply.wamid) == {"state": "delivered", "platform_status": "delivered"}


def test_a_telegram_photo_without_caption_reaches_claude_as_an_image(stack):
    serve, telegram, anthropic, _openai, _whatsapp, _slack = stack
    chat_id = 720001
    token = paid_link_token(serve, "tg-photo@example.com", "cus_tg_photo")
    serve.telegram(text_update(7000, chat_id, f"/start {token}"))
    wait_until(lambda: any(m.text.startswith("Linked!") for m in telegram.chat_messages(chat_id)),
               30, "the link confirmation on Telegram")

    # The published photo update without its caption; Telegram serves the largest size as PNG.
    update = copy.deepcopy(published_update("update_photo_caption"))
    message = update["message"]
    del message["caption"]
    update["update_id"] = message["message_id"] = 7001
    message["from"]["id"] = message["chat"]["id"] = chat_id
    picture = png(64, 48)
    largest = max(message["photo"], key=lambda size: size["file_size"])
    telegram.add_file(largest["file_id"], picture, file_path="photos/file_7.png")
    assert serve.telegram(update).json()["outcome"] == "published"

    wait_until(lambda: any(m.text == IMAGE_ANSWER for m in telegram.chat_messages(chat_id)), 120,
               "the answer about the photo")
    blocks = [block for request in anthropic.requests for block in image_blocks(request["json"])]
    assert [base64.b64decode(b["source"]["data"]) for b in blocks] == [picture]
    assert blocks[0]["source"]["media_type"] == "image/png"


def test_a_pdf_sent_in_a_slack_dm_is_read_by_the_model(stack):
    serve, _telegram, anthropic, _openai, _whatsapp, slack = stack
    token = paid_link_token(serve, "slack-pdf@example.com", "cus_slack_pdf")
    page = serve.http.get("/slack/install")
    state = re.search(r"state=([A-Za-z0-9_-]+)", page.text).group(1)
    cookie = page.headers["set-cookie"].split(";")[0]  # the Secure cookie a browser would return
    assert serve.http.get(f"/slack/oauth_redirect?code=good-code&state={state}",
                          headers={"Cookie": cookie}).status_code == 200
    form = (f"team_id={TEAM}&user_id={SLACK_USER}&command=%2Fhermes&text={quote('link ' + token)}"
            f"&channel_id=D024BE91L&trigger_id=1.2.link").encode()
    linked = serve.http.post("/webhooks/slack/commands", content=form, headers=signed_headers(
        form, SLACK_SECRET, content_type="application/x-www-form-urlencoded"))
    assert linked.json()["text"].startswith("Linked!")

    shared = slack.add_file(TEAM, pdf([PDF_FACT]), "invoice.pdf", "application/pdf")
    body = copy.deepcopy(slack_standin.published_payload("event_message_im.json"))
    body["event"].update(user=SLACK_USER, text="what do I owe?", subtype="file_share",
                         files=[shared], upload=False)
    body.update(team_id=TEAM, event_id="EvPdf1")
    raw = json.dumps(body).encode()
    answer = serve.http.post("/webhooks/slack/events", content=raw,
                             headers=signed_headers(raw, SLACK_SECRET, content_type="application/json"))
    assert answer.json()["outcome"] == "published", answer.text

    wait_until(lambda: any(m.text == PDF_ANSWER for ch in _dm_channels(slack)
                           for m in slack.channel_messages(ch)), 120, "the answer about the PDF")
    asked = [last_user_text(r["json"]) for r in anthropic.requests
             if PDF_FACT in last_user_text(r["json"])]
    assert asked and "what do I owe?" in asked[0] and 'name="invoice.pdf"' in asked[0]


def _dm_channels(slack) -> set[str]:
    return {c.params["channel"] for c in slack.calls_for("chat.postMessage")
            if str(c.params.get("channel", "")).startswith("D")}
