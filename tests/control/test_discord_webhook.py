"""POST /webhooks/discord: Ed25519 verification, PING, linking, deferred commands edited in place."""

from __future__ import annotations

import json
import re
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from support.dashboard import sign_in
from support.discord import api_overrides
from support.fuzz import examples
from support.webhooks import stored_state

from control.channels.telegram import BotApiClient
from control.channels.telegram_adapter import TelegramAdapter
from control.db import database
from control.models import (
    ChatIdentity,
    Delivery,
    DeliveryState,
    DiscordInteraction,
    Message,
    Tenant,
)
from control.services import lifecycle, linking
from control.services.delivery import DeliveryWorker
from standins.discord_api import DiscordApiStandin, InteractionSigner, command_interaction
from standins.telegram_bot_api import TelegramBotApiStandin
from wire.protocol import Envelope, Event, events_stream, messages_stream

SIGNER = InteractionSigner()
USER = "53908232506183680"


REALDATA = Path(__file__).resolve().parents[2] / "standins" / "payloads" / "discord"


def _published(name: str) -> dict:
    """A payload published by Discord (standins/payloads/README.md)."""
    return json.loads((REALDATA / name).read_text())


@pytest.fixture
def discord_api():
    with DiscordApiStandin() as api:
        yield api


@pytest.fixture
def settings(settings, discord_api):
    return replace(settings, discord_public_key=SIGNER.public_key_hex, **api_overrides(discord_api))


def post(client, payload, *, raw: bytes | None = None, headers: dict | None = None,
         timestamp: int | None = None):
    body = raw if raw is not None else json.dumps(payload).encode()
    sent = headers if headers is not None else SIGNER.headers(body, timestamp)
    return client.post("/webhooks/discord", data=body, headers=sent)


def link(client, tenant, user=USER):
    with database.connection_context():
        token = linking.issue_token(tenant, 600).token
    return post(client, command_interaction("link", user, {"code": token}))


def inbox(runtime, tenant) -> list[Envelope]:
    return [Envelope.from_json(e.payload) for e in runtime.bus.read(
        [messages_stream(str(tenant.id))], "test", "t", count=100, block=0)]


OTHER = InteractionSigner()


@pytest.mark.parametrize("case", ["missing", "other_key", "tampered", "stale", "future", "not_hex"])
def test_unverified_requests_are_refused_and_store_nothing(client, runtime, tenant, case):
    payload = command_interaction("ask", USER, {"question": "hi"})
    body = json.dumps(payload).encode()
    headers = {
        "missing": {"Content-Type": "application/json"},
        "other_key": OTHER.headers(body),
        "tampered": SIGNER.headers(body.replace(b"hi", b"ho")),
        "stale": SIGNER.headers(body, int(time.time()) - 600),
        "future": SIGNER.headers(body, int(time.time()) + 600),
        "not_hex": {**SIGNER.headers(body), "X-Signature-Ed25519": "zz" * 64},
    }[case]
    before = stored_state(runtime)
    response = post(client, None, raw=body, headers=headers)
    assert response.status_code == 401
    assert stored_state(runtime) == before


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"type": 2}',
                                 json.dumps({"id": "1", "type": 2, "token": "t", "data": {}}).encode()])
def test_malformed_signed_bodies_are_400_and_store_nothing(client, runtime, tenant, raw):
    before = stored_state(runtime)
    response = post(client, None, raw=raw)
    assert response.status_code == 400
    assert stored_state(runtime) == before


def test_published_ping_gets_pong(client, runtime):
    before = stored_state(runtime)
    response = post(client, _published("interaction_ping.json"))
    assert response.status_code == 200
    assert response.json == {"type": 1}
    assert stored_state(runtime) == before


def test_unlinked_user_is_told_how_to_link_and_nothing_reaches_an_agent(client, runtime, tenant):
    response = post(client, _published("interaction_application_command.json"))
    assert response.status_code == 200
    assert response.json["type"] == 4
    assert response.json["data"]["flags"] == 64
    assert "/link CODE" in response.json["data"]["content"]
    assert inbox(runtime, tenant) == []
    with database.connection_context():
        assert Message.select().count() == 0


def test_link_with_a_code_links_the_user_privately(client, tenant):
    response = link(client, tenant)
    assert response.json["type"] == 4
    assert response.json["data"]["content"].startswith("Linked!")
    assert response.json["data"]["flags"] == 64
    with database.connection_context():
        identity = ChatIdentity.get(ChatIdentity.channel == "discord")
        assert (identity.chat_id, identity.tenant_id) == (USER, tenant.id)
    wrong = post(client, command_interaction("link", "1111", {"code": "not-a-code"}))
    assert "not valid" in wrong.json["data"]["content"]


def test_the_code_the_dashboard_shows_links_discord(client):
    tenant = sign_in(client, "dee@example.com")
    page = client.get("/dashboard/chats").text
    code = re.search(r"<code>/link ([A-Za-z0-9_-]+)</code>", page).group(1)
    answer = post(client, command_interaction("link", USER, {"code": code}))
    assert answer.json["data"]["content"].startswith("Linked!")
    with database.connection_context():
        assert linking.tenant_for_chat("discord", USER).id == tenant.id
    assert "<td>Discord</td>" in client.get("/dashboard/chats").text


def test_command_is_deferred_then_the_original_response_is_edited_with_the_reply(
        client, runtime, tenant, discord_api):
    link(client, tenant)
    interaction = discord_api.expect_interaction(
        command_interaction("ask", USER, {"question": "What is 2+2?"}))
    response = post(client, interaction)
    assert response.json == {"type": 5}
    assert inbox(runtime, tenant) == []  # acknowledged before any write: routed by the queue
    assert post(client, interaction).json == {"type": 5}  # a retried interaction: still one envelope
    assert run_queued(runtime.huey, "route_discord_interaction") == 2
    [envelope] = inbox(runtime, tenant)
    assert (envelope.channel, envelope.text) == ("discord", "What is 2+2?")
    assert envelope.chat_id == f"interaction:{interaction['id']}"
    with database.connection_context():
        stored = DiscordInteraction.get(DiscordInteraction.interaction_id == interaction["id"])
        assert interaction["token"] not in stored.token  # encrypted at rest
    discord_api.respond(interaction, response.json)  # what Discord does with our answer

    with TelegramBotApiStandin() as telegram:
        adapters = {"telegram": TelegramAdapter(BotApiClient(telegram.token, telegram.base_url)),
                    "discord": runtime.discord_adapter}
        worker = DeliveryWorker(runtime.bus, adapters, lambda: [tenant.id], edit_interval=0.0)
        with database.connection_context():
            for seq, (kind, text) in enumerate([("delta", "It is"), ("final", "It is 4.")]):
                runtime.bus.append(events_stream(str(tenant.id)), Event(
                    envelope.id, seq, kind, text, str(tenant.id), "discord", envelope.chat_id).to_json())
                _step_until(worker, lambda t=text: discord_api.original(interaction["id"]).content == t)
            _step_until(worker, lambda: _delivered(envelope.id))
            ledger = Delivery.get(Delivery.envelope_id == envelope.id)
        assert telegram.calls == []
    original = discord_api.original(interaction["id"])
    assert original.history == ["", "It is", "It is 4."]
    assert (ledger.channel, ledger.platform_message_id, ledger.state) == ("discord", "@original", "delivered")
    assert [m.content for m in discord_api.interaction_messages(interaction["id"])] == ["It is 4."]


def test_private_commands_defer_ephemerally(client, tenant, discord_api):
    link(client, tenant)
    response = post(client, command_interaction("usage", USER))
    assert response.json == {"type": 5, "data": {"flags": 64}}


def test_a_tenant_paused_after_the_ack_sees_why_in_the_deferred_response(
        client, runtime, tenant, discord_api):
    link(client, tenant)
    interaction = discord_api.expect_interaction(command_interaction("ask", USER, {"question": "hi"}))
    response = post(client, interaction)
    discord_api.respond(interaction, response.json)
    with database.connection_context():
        lifecycle.begin_grace(Tenant.get_by_id(tenant.id), runtime.settings.grace_days)
    run_queued(runtime.huey, "route_discord_interaction")
    assert inbox(runtime, tenant) == []
    assert "Resubscribe" in discord_api.original(interaction["id"]).content


def run_queued(huey, name: str) -> int:
    """Run the queued ``name`` tasks (what the consumer does); others stay queued.  Returns how
    many ran."""
    ran, others = 0, []
    while (task := huey.dequeue()) is not None:
        if task.name != name:
            others.append(task)
            continue
        huey.execute(task)
        ran += 1
    for task in others:
        huey.enqueue(task)
    return ran


def _step_until(worker, predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "delivery did not get there in time"
        worker.step(block=0.05)


def _delivered(envelope_id: str) -> bool:
    row = Delivery.get_or_none(Delivery.envelope_id == envelope_id)
    return row is not None and row.state == DeliveryState.DELIVERED


# Signed hostile bodies: past the verifier, the parser must answer 200 or 400, never 500, and a
# 400 stores nothing (derandomized, as tests/control/test_hostile_input.py does for the others).
_LEAVES = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20)
           | st.sampled_from(["\x00", "a\x00b", "123", "ask", "link", USER]))
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=12)
_INTERACTIONS = st.fixed_dictionaries(
    {"id": st.one_of(st.integers(1, 10**6).map(str), _LEAVES), "type": st.one_of(
        st.sampled_from([1, 2, 3, 5]), _LEAVES), "token": st.one_of(st.text(max_size=5), _LEAVES)},
    optional={"data": st.one_of(_VALUES, st.fixed_dictionaries(
        {"name": st.sampled_from(["ask", "link", "help", "usage"]),
         "options": st.lists(st.fixed_dictionaries({"name": st.text(max_size=5), "value": _LEAVES}),
                             max_size=2)})),
        "member": st.one_of(_VALUES, st.just({"user": {"id": USER}})),
        "user": _VALUES, "channel_id": st.one_of(st.just("645027906669510667"), _LEAVES)})


@hyp_settings(max_examples=examples(60), deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.one_of(_INTERACTIONS, _VALUES))
def test_signed_hostile_bodies_never_fail_the_server(client, runtime, tenant, body):
    before = stored_state(runtime)
    response = post(client, body)
    assert response.status_code in (200, 400), response.data
    if response.status_code == 400:
        assert stored_state(runtime) == before
