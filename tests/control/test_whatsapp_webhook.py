"""The WhatsApp webhook: Meta's handshake, signatures checked before anything is read or stored,
malformed bodies refused, every published message shape routed once per wamid, linking with
the wa.me link's prefilled text, and status callbacks in the delivery ledger."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from support.dashboard import sign_in
from support.fuzz import examples
from support.webhooks import stored_state
from support.whatsapp import (
    APP_SECRET,
    BUSINESS_NUMBER,
    PATH,
    VERIFY_TOKEN,
    WA_ID,
    configure,
    post,
)

from control.channels.whatsapp import WhatsAppConfig, link_url
from control.db import database
from control.models import AttentionItem, ChatIdentity, Delivery, WhatsAppWindow
from control.services import linking, routing
from standins.whatsapp_api import (
    WhatsAppApiStandin,
    message_body,
    published_payload,
    sign,
    status_body,
)
from wire.protocol import Envelope, messages_stream


@pytest.fixture
def settings(settings):
    return settings.with_overrides(huey_immediate=True)


@pytest.fixture
def api():
    with WhatsAppApiStandin() as standin:
        yield standin


@pytest.fixture
def configured(app, runtime, api):
    return configure(app, runtime, api)


@pytest.fixture
def linked(client, configured, tenant, api):
    with database.connection_context():
        token = linking.current_token(tenant, 3600).token
    answer = post(client, message_body(text=f"/link {token}", wa_id=WA_ID))
    assert answer.status_code == 200 and answer.json["messages"] == ["linked"]
    return tenant


def _read_all(runtime, stream) -> list[Envelope]:
    deliveries = runtime.bus.read([stream], "test-reader", "t", count=100)
    return [Envelope.from_json(d.payload) for d in deliveries]


# -- the subscription handshake -----------------------------------------------------------------

def test_handshake_echoes_the_challenge_as_text_with_the_right_verify_token(client, configured):
    answer = client.get(PATH, query_string={"hub.mode": "subscribe", "hub.challenge": "1158201444",
                                            "hub.verify_token": VERIFY_TOKEN})
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain" and answer.get_data(as_text=True) == "1158201444"


@pytest.mark.parametrize("query", [
    {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "wrong"},
    {"hub.mode": "unsubscribe", "hub.challenge": "1", "hub.verify_token": VERIFY_TOKEN},
    {"hub.mode": "subscribe", "hub.challenge": "1", "hub.verify_token": "v\u00e9rify"},
    {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN},
    {}])
def test_handshake_with_a_wrong_token_or_mode_is_403(client, configured, query):
    assert client.get(PATH, query_string=query).status_code == 403


def test_handshake_is_403_when_no_verify_token_is_configured(client, app):
    app.extensions["whatsapp"] = WhatsAppConfig(app_secret=APP_SECRET)
    answer = client.get(PATH, query_string={"hub.mode": "subscribe", "hub.challenge": "1",
                                            "hub.verify_token": ""})
    assert answer.status_code == 403


# -- signatures ---------------------------------------------------------------------------------

@pytest.mark.parametrize("signature", ["", "sha256=" + "0" * 64, "sha256=\u00e9\u00e8", "garbage",
                                       "sha1=abc"], ids=["missing", "wrong", "non-ascii",
                                                         "garbage", "sha1"])
def test_bad_signature_is_401_and_stores_nothing(client, runtime, configured, tenant, signature):
    before = stored_state(runtime)
    answer = post(client, message_body(), signature=signature)
    assert answer.status_code == 401 and answer.json["error"] == "unauthorized"
    assert stored_state(runtime) == before


def test_body_signed_with_another_secret_is_401(client, runtime, configured):
    before = stored_state(runtime)
    assert post(client, message_body(), secret="someone-else").status_code == 401
    assert stored_state(runtime) == before


def test_without_an_app_secret_whatsapp_is_off_and_every_post_is_401(client, runtime, app):
    app.extensions["whatsapp"] = WhatsAppConfig()
    before = stored_state(runtime)
    assert post(client, message_body(), secret="").status_code == 401
    assert stored_state(runtime) == before


# -- malformed bodies ---------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    b"not json", b'{"entry": "x"}', b"[1, 2]", (b'{"entry": [{"changes": [{"value": '
    b'{"messages": [{"from": 1, "id": "w", "type": "text"}]}}]}]}'),
    (b'{"entry": [{"changes": [{"value": {"messages": [{"from": "1", "id": "w", "type": "text", '
    b'"text": {"body": "a\\u0000b"}}]}}]}]}'),
    b"[" * 5000 + b"]" * 5000, b'{"a": "\xc3\x28"}'],
    ids=["text", "entry-not-list", "array", "from-not-string", "nul", "deep", "non-utf8"])
def test_malformed_signed_body_is_400_and_stores_nothing(client, runtime, configured, raw):
    before = stored_state(runtime)
    answer = post(client, None, raw=raw)
    assert answer.status_code == 400 and answer.json["error"] == "bad_request"
    assert stored_state(runtime) == before


# -- messages -----------------------------------------------------------------------------------

EXPECTED = {
    "message_text.json": ("Body Text", None),
    "message_voice.json": ("", {"kind": "voice", "file_id": "1234567890987654321",
                                "mime_type": "audio/ogg; codecs=opus",
                                "sha256": "m04pFf2ERdaopTyFkGPA0+bX3i+YY2dYgVFwOgDLSDI="}),
    "message_audio.json": ("", {"kind": "audio", "file_id": "1234567890987654321",
                                "mime_type": "audio/ogg; codecs=opus",
                                "sha256": "E3dxS/PdYZE7ppA3pQ4mpCFaXBJ8pX4SRN/dsfvds/iPGA="}),
    "message_image.json": ("", {"kind": "image", "file_id": "65463453", "mime_type": "image/jpeg",
                                "sha256": "4654+8g="}),
    "message_document.json": ("caption", {"kind": "document", "file_id": "1234567890987654321",
                                          "mime_type": "application/pdf", "name": "filename.pdf",
                                          "sha256": "grwfwe/ZPx0wAbdfbdeFUNItPZ0RylL8gGUvdt3YFqc18SY="}),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_published_message_reaches_the_agent_with_its_text_and_attachment(
        client, runtime, linked, name):
    body = published_payload(name)  # unchanged: Meta's shape, its wamid and sender
    answer = post(client, body)
    assert answer.status_code == 200 and answer.json["messages"] == ["published"]
    [envelope] = _read_all(runtime, messages_stream(str(linked.id)))
    text, attachment = EXPECTED[name]
    assert (envelope.channel, envelope.chat_id, envelope.sender_id) == ("whatsapp", WA_ID, WA_ID)
    assert envelope.platform_message_id == "wamid.xyzxyz" and envelope.text == text
    if attachment is None:
        assert envelope.attachments == []
    else:
        [got] = envelope.attachments
        assert {k: got[k] for k in attachment} == attachment


def test_a_voice_note_is_downloaded_from_the_graph_api_and_reaches_the_agent_as_a_file(
        client, runtime, linked, api):
    voice = b"OggS" + bytes(200)
    api.add_media("1234567890987654321", voice, "audio/ogg")
    assert post(client, published_payload("message_voice.json")).status_code == 200
    [envelope] = _read_all(runtime, messages_stream(str(linked.id)))
    [attachment] = envelope.attachments
    assert attachment["kind"] == "voice" and "error" not in attachment
    assert attachment["size"] == len(voice) and attachment["url"]
    assert attachment["sha256"] == hashlib.sha256(voice).hexdigest()


def test_an_edit_notification_is_acknowledged_and_ignored(client, runtime, linked):
    answer = post(client, published_payload("message_edit_image_caption.json"))
    assert answer.status_code == 200 and answer.json["messages"] == []
    assert _read_all(runtime, messages_stream(str(linked.id))) == []


def test_meta_redelivering_a_message_publishes_it_once(client, runtime, linked):
    body = message_body(wamid="wamid.once", text="hello once")
    assert post(client, body).json["messages"] == ["published"]
    assert post(client, body).json["messages"] == ["duplicate"]
    assert [e.text for e in _read_all(runtime, messages_stream(str(linked.id)))] == ["hello once"]


def test_an_unlinked_number_is_told_how_to_link_and_nothing_reaches_an_agent(
        client, runtime, configured, tenant, api):
    answer = post(client, message_body(text="hello?", wa_id="4915112345678"))
    assert answer.json["messages"] == ["answered"]
    [told] = api.texts_to("4915112345678")
    assert "not linked" in told
    assert _read_all(runtime, messages_stream(str(tenant.id))) == []


def test_every_message_opens_the_24_hour_window_at_its_own_time(client, configured, tenant):
    post(client, message_body(text="hi", wa_id="4915100000001", timestamp=1_700_000_000))
    with database.connection_context():
        row = WhatsAppWindow.get(WhatsAppWindow.wa_id == "4915100000001")
    assert row.last_inbound_at == datetime(2023, 11, 14, 22, 13, 20)  # UTC, as Meta stamped it
    post(client, message_body(text="late copy", wa_id="4915100000001", timestamp=1_600_000_000))
    post(client, message_body(text="newer", wa_id="4915100000001", timestamp=1_700_000_600))
    with database.connection_context():
        row = WhatsAppWindow.get(WhatsAppWindow.wa_id == "4915100000001")
    assert row.last_inbound_at == datetime(2023, 11, 14, 22, 23, 20)  # never moved back


# -- linking ------------------------------------------------------------------------------------

def test_the_wa_me_link_prefills_the_link_command_and_sending_it_links_the_number(
        client, configured, tenant, api):
    with database.connection_context():
        token = linking.current_token(tenant, 3600).token
    url = link_url(BUSINESS_NUMBER, token)
    parts = urlsplit(url)
    assert (parts.netloc, parts.path) == ("wa.me", f"/{BUSINESS_NUMBER}")
    prefilled = parse_qs(parts.query)["text"][0]
    answer = post(client, message_body(text=prefilled, wa_id=WA_ID))
    assert answer.json["messages"] == ["linked"]
    assert api.texts_to(WA_ID)[-1].startswith("Linked!")
    with database.connection_context():
        identity = ChatIdentity.get(ChatIdentity.chat_id == WA_ID)
        assert (identity.channel, identity.tenant_id) == ("whatsapp", tenant.id)
    again = post(client, message_body(text=prefilled, wa_id="4915100000002"))
    assert again.json["messages"] == ["answered"]  # single use
    assert "not linked" in api.texts_to("4915100000002")[-1]


def test_the_dashboard_shows_the_whatsapp_link_with_the_code(client, configured):
    sign_in(client, "wa@example.com")
    page = client.get("/dashboard/chats").get_data(as_text=True)
    assert f"https://wa.me/{BUSINESS_NUMBER}?text=%2Flink%20" in page


# -- statuses -----------------------------------------------------------------------------------

def _ledger(tenant, wamid: str) -> Delivery:
    with database.connection_context():
        return Delivery.create(envelope_id=f"env-{wamid}", tenant=tenant, channel="whatsapp",
                               chat_id=WA_ID, platform_message_id=wamid, state="delivered",
                               last_text="the reply")


def test_statuses_are_recorded_in_order_and_never_move_back(client, configured, tenant):
    _ledger(tenant, "wamid.s1")
    for status, expected in [("sent", "recorded"), ("read", "recorded"), ("delivered", "stale")]:
        answer = post(client, status_body("wamid.s1", status))
        assert answer.status_code == 200 and answer.json["statuses"] == [expected]
    with database.connection_context():
        assert Delivery.get(Delivery.envelope_id == "env-wamid.s1").platform_status == "read"


def test_a_failed_status_marks_the_reply_not_delivered_and_raises_attention(
        client, configured, tenant):
    _ledger(tenant, "wamid.f1")
    answer = post(client, status_body("wamid.f1", "failed"))
    assert answer.json["statuses"] == ["failed"]
    with database.connection_context():
        row = Delivery.get(Delivery.envelope_id == "env-wamid.f1")
        assert (row.state, row.platform_status) == ("failed", "failed")
        assert "130472" in row.failure
        [item] = AttentionItem.select().where(AttentionItem.kind == "whatsapp_failed")
        assert item.subject == "env-wamid.f1"


def _scheduled(runtime) -> list:
    return runtime.huey.read_schedule(datetime(2100, 1, 1))


def test_a_status_for_an_unknown_message_is_acknowledged_and_matched_again_later(
        client, configured, runtime):
    answer = post(client, published_payload("status_delivered.json"))
    assert answer.status_code == 200 and answer.json["statuses"] == ["unknown"]
    [retry] = _scheduled(runtime)
    assert retry.name == "record_whatsapp_status"


def test_a_status_that_outruns_the_saved_wamid_is_recorded_by_the_retry(
        client, configured, runtime, tenant):
    # Meta may send ``sent`` before the delivery worker has saved the id the Graph API returned.
    assert post(client, status_body("wamid.early", "sent")).json["statuses"] == ["unknown"]
    _ledger(tenant, "wamid.early")
    for task in _scheduled(runtime):  # as the consumer runs it once its delay has passed
        runtime.huey.execute(task, timestamp=task.eta)
    with database.connection_context():
        assert Delivery.get(Delivery.envelope_id == "env-wamid.early").platform_status == "sent"
    assert _scheduled(runtime) == []


def test_a_status_of_a_control_plane_answer_is_not_retried(client, configured, runtime, tenant):
    with database.connection_context():
        routing.record_control_reply("whatsapp", WA_ID, "Linked!", "wamid.control")
    assert post(client, status_body("wamid.control", "delivered")).json["statuses"] == ["control"]
    assert _scheduled(runtime) == []


# -- hostile input ------------------------------------------------------------------------------

FUZZ = fuzz_settings(max_examples=examples(120), deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow])
LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
          | st.text(max_size=20) | st.sampled_from(["\x00", "ünïcødé", "text", "audio", "image"]))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
FIELDS = ("from", "id", "type", "timestamp", "text", "audio", "image", "document")


@st.composite
def mutated_messages(draw):
    body = message_body(name=draw(st.sampled_from(sorted(EXPECTED))), wamid="wamid.fuzz")
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message[draw(st.sampled_from(FIELDS))] = draw(VALUES)
    return json.dumps(body).encode()


@FUZZ
@given(raw=st.one_of(mutated_messages(), VALUES.map(lambda v: json.dumps(v).encode()),
                     st.binary(max_size=200)))
def test_signed_hostile_bodies_never_answer_500_and_a_refusal_stores_nothing(
        client, runtime, linked, raw):
    before = stored_state(runtime)
    answer = client.post(PATH, data=raw, headers={"X-Hub-Signature-256": sign(raw, APP_SECRET),
                                                  "Content-Type": "application/json"})
    assert answer.status_code < 500, answer.get_data(as_text=True)[:300]
    if answer.status_code >= 400:
        assert answer.is_json and stored_state(runtime) == before
