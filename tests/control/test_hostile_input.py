"""Hostile input never reaches a 500 on the public routes, and a rejected request stores nothing.

Bounded, derandomized fuzzing (hypothesis) of both webhooks, with valid signatures too so the
input gets past the verifier, plus one regression test per crash found before: JSON nested
5,000 deep, a non-UTF-8 Stripe body, a non-ASCII signature header.
"""

from __future__ import annotations

import copy
import itertools
import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from hypothesis import strategies as st
from support.fuzz import examples
from support.webhooks import STRIPE_SECRET, TELEGRAM_SECRET, post_telegram, stored_state

from control.db import database
from control.services import linking
from control.web.webhooks import WEBHOOK_MAX_BYTES
from standins import stripe_events as se
from standins.stripe_events import sign
from standins.telegram_updates import published_update, text_update

FUZZ = fuzz_settings(max_examples=examples(150), deadline=None, derandomize=True, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture,
                                            HealthCheck.too_slow, HealthCheck.data_too_large])
CHAT = 777002
_counter = itertools.count()

CONTENT_TYPES = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "text/plain", "application/xml",
    "multipart/form-data; boundary=xyz", "application/x-www-form-urlencoded", "",
    "application/json; charset=latin-1"])


def _nested(depth: int, opener: bytes, closer: bytes) -> bytes:
    return opener * depth + closer * depth


JSON_LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats()
               | st.text(max_size=20) | st.text(min_size=250, max_size=300)
               | st.sampled_from(["\x00", "ünïcødé", "a\x00b", "price_heavy_eur", "light", "private"]))
JSON_VALUES = st.recursive(JSON_LEAVES, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
HOSTILE_BODIES = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=40).map(lambda b: b"\xff\xfe" + b + b"\xc3\x28"),
    st.integers(65, 6000).map(lambda n: _nested(n, b"[", b"]")),
    st.integers(65, 6000).map(lambda n: b'{"update_id": 1, "message": ' + _nested(n, b'{"a":', b"}")
                              .replace(b"}", b"1}", 1) + b"}"),
    st.integers(2, 64).map(lambda n: _nested(n, b"[", b"]")),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.just(b"x" * (WEBHOOK_MAX_BYTES + 1)),
    st.just(b'{"update_id": ' + b"9" * 5000 + b"}"),
)
HEADER_TEXT = st.text(st.characters(blacklist_characters="\r\n", max_codepoint=0x2FF), max_size=40)


def _stripe_header(body: bytes, choice: str, junk: str) -> str:
    if choice == "valid":
        return sign(body, STRIPE_SECRET)
    if choice == "valid_plus_junk":
        return sign(body, STRIPE_SECRET) + ",v1=" + junk
    return junk


def _assert_answer_is_safe(response, before: dict, runtime) -> None:
    """Not a server error, a JSON error body without a stack trace, and nothing stored if rejected."""
    assert response.status_code < 500, response.get_data(as_text=True)[:500]
    assert "Traceback" not in response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.is_json and "error" in response.json
        assert stored_state(runtime) == before


@FUZZ
@given(body=HOSTILE_BODIES, choice=st.sampled_from(["valid", "valid_plus_junk", "junk"]),
       junk=HEADER_TEXT, content_type=CONTENT_TYPES)
def test_stripe_webhook_never_answers_500_to_hostile_bodies(client, runtime, body, choice, junk,
                                                            content_type):
    before = stored_state(runtime)
    response = client.post("/webhooks/stripe", data=body, content_type=content_type,
                           headers={"Stripe-Signature": _stripe_header(body, choice, junk)})
    _assert_answer_is_safe(response, before, runtime)
    if choice == "junk":
        assert response.status_code == 400 or response.status_code == 413


@FUZZ
@given(body=HOSTILE_BODIES, secret=st.none() | st.just(TELEGRAM_SECRET) | HEADER_TEXT,
       content_type=CONTENT_TYPES)
def test_telegram_webhook_never_answers_500_to_hostile_bodies(client, runtime, tenant, body, secret,
                                                              content_type):
    before = stored_state(runtime)
    headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
    response = client.post("/webhooks/telegram", data=body, content_type=content_type,
                           headers=headers)
    _assert_answer_is_safe(response, before, runtime)
    if secret != TELEGRAM_SECRET and len(body) <= WEBHOOK_MAX_BYTES:
        assert response.status_code == 401


def _paths(doc, prefix=()):
    """Every path into ``doc`` (keys and list indices), the root included."""
    yield prefix
    children = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in children:
        yield from _paths(value, (*prefix, key))


def _mutate(draw, doc):
    """Replace one to three values anywhere in ``doc`` with random JSON, or drop them."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            return draw(JSON_VALUES)
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) or isinstance(parent, list):
            parent[path[-1]] = draw(JSON_VALUES)
        else:
            del parent[path[-1]]
    return doc


STRIPE_EVENTS = [
    se.subscription_created(customer="cus_F", subscription="sub_F", plan="light", event_id="evt"),
    se.subscription_created(customer="cus_F", subscription="sub_F", plan="heavy", event_id="evt",
                            shape="2023", event_type="customer.subscription.updated"),
    se.subscription_created(customer="cus_F", subscription="sub_F", plan="light", event_id="evt",
                            status="canceled", event_type="customer.subscription.deleted"),
    se.checkout_completed(email="fuzz@example.com", customer="cus_F", subscription="sub_F",
                          event_id="evt"),
    se.checkout_completed(email="fuzz@example.com", customer="cus_F", subscription="sub_F",
                          event_id="evt", shape="2023"),
]


@FUZZ
@given(data=st.data())
def test_signed_stripe_events_with_wrong_field_types_never_answer_500(client, runtime, data):
    event = copy.deepcopy(data.draw(st.sampled_from(STRIPE_EVENTS)))
    event["id"] = f"evt_fuzz_{next(_counter)}"
    body = json.dumps(_mutate(data.draw, event)).encode()
    before = stored_state(runtime)
    response = client.post("/webhooks/stripe", data=body, content_type="application/json",
                           headers={"Stripe-Signature": sign(body, STRIPE_SECRET)})
    _assert_answer_is_safe(response, before, runtime)


@pytest.fixture
def linked_chat(client, tenant):
    with database.connection_context():
        token = linking.current_token(tenant, 3600).token
    response = post_telegram(client, text_update(900, CHAT, f"/start {token}"))
    assert response.json["outcome"] == "linked"
    return tenant


TELEGRAM_UPDATES = [text_update(1, CHAT, "hello"), text_update(1, CHAT, "/help"),
                    published_update("update_photo_caption"), published_update("update_voice"),
                    published_update("update_callback_query"),
                    published_update("update_edited_message")]
for _update in TELEGRAM_UPDATES:
    if "message" in _update:
        _update["message"]["chat"].update(id=CHAT, type="private")


@FUZZ
@given(data=st.data())
def test_telegram_updates_with_wrong_field_types_never_answer_500(client, runtime, linked_chat,
                                                                  data):
    update = copy.deepcopy(data.draw(st.sampled_from(TELEGRAM_UPDATES)))
    update["update_id"] = 10_000 + next(_counter)
    body = json.dumps(_mutate(data.draw, update)).encode()
    before = stored_state(runtime)
    response = post_telegram(client, None, raw=body)
    _assert_answer_is_safe(response, before, runtime)


@fuzz_settings(max_examples=examples(60), deadline=None, derandomize=True, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/healthz", "/readyz", "/metrics", "/webhooks/stripe",
                             "/webhooks/telegram", "/webhooks/whatsapp", "/webhooks/nope", "/nope"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       query=st.text(max_size=30), body=st.binary(max_size=100), header=HEADER_TEXT)
def test_every_route_answers_hostile_requests_without_a_server_error(client, path, method, query,
                                                                     body, header):
    response = client.open(path, method=method, query_string={"q": query}, data=body,
                           headers={"X-Junk": header, "Stripe-Signature": header,
                                    "X-Telegram-Bot-Api-Secret-Token": header,
                                    "X-Hub-Signature-256": header})
    assert response.status_code < 500
    assert "Traceback" not in response.get_data(as_text=True)


# Regression tests: each of these answered 500 before.

@pytest.mark.parametrize("body", [_nested(5000, b"[", b"]"), b'{"a":' * 5000 + b"1" + b"}" * 5000],
                         ids=["arrays", "objects"])
def test_json_nested_5000_deep_is_400_and_stores_nothing(client, runtime, body):
    before = stored_state(runtime)
    stripe_response = client.post("/webhooks/stripe", data=body, content_type="application/json",
                                  headers={"Stripe-Signature": sign(body, STRIPE_SECRET)})
    telegram_response = post_telegram(client, None, raw=body)
    for response in (stripe_response, telegram_response):
        assert response.status_code == 400
        assert response.json["error"] == "bad_request"
    assert stored_state(runtime) == before


def test_non_utf8_stripe_body_with_a_valid_signature_is_400(client, runtime):
    body = b'{"id": "evt_\xff\xfe", "type": "customer.subscription.created"}'
    before = stored_state(runtime)
    response = client.post("/webhooks/stripe", data=body, content_type="application/json",
                           headers={"Stripe-Signature": sign(body, STRIPE_SECRET)})
    assert response.status_code == 400
    assert response.json["error"] == "bad_request"
    assert stored_state(runtime) == before


def test_non_utf8_telegram_body_with_the_right_secret_is_400(client, runtime):
    before = stored_state(runtime)
    response = post_telegram(client, None, raw=b'{"update_id": 5, "message": "\xc3\x28"}')
    assert response.status_code == 400
    assert stored_state(runtime) == before


def test_non_ascii_stripe_signature_header_is_a_plain_mismatch(client, runtime):
    body = json.dumps(STRIPE_EVENTS[0]).encode()
    before = stored_state(runtime)
    response = client.post("/webhooks/stripe", data=body, content_type="application/json",
                           headers={"Stripe-Signature": "t=1700000000,v1=\u00e9\u00e8"})
    assert response.status_code == 400
    assert response.json["error"] == "bad_signature"
    assert stored_state(runtime) == before


def test_non_ascii_telegram_secret_header_is_401(client, runtime):
    before = stored_state(runtime)
    response = post_telegram(client, text_update(3, CHAT, "hi"), secret="s\u00e9cr\u00e8t")
    assert response.status_code == 401
    assert stored_state(runtime) == before


@pytest.mark.parametrize("path", ["/webhooks/stripe", "/webhooks/telegram"])
def test_oversized_body_is_413_and_stores_nothing(client, runtime, path):
    before = stored_state(runtime)
    body = b"{" + b" " * WEBHOOK_MAX_BYTES + b"}"
    response = client.post(path, data=body, content_type="application/json",
                           headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET,
                                    "Stripe-Signature": sign(body, STRIPE_SECRET)})
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"
    assert stored_state(runtime) == before


def test_signed_event_with_an_overlong_customer_id_is_400(client, runtime):
    event = copy.deepcopy(STRIPE_EVENTS[0])
    event["data"]["object"]["customer"] = "cus_" + "x" * 300
    body = json.dumps(event).encode()
    before = stored_state(runtime)
    response = client.post("/webhooks/stripe", data=body, content_type="application/json",
                           headers={"Stripe-Signature": sign(body, STRIPE_SECRET)})
    assert response.status_code == 400
    assert stored_state(runtime) == before
