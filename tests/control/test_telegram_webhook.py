"""Telegram webhook: secret checked in constant time, linking, routing to the bus, never a 500."""

from __future__ import annotations

from datetime import timedelta

import pytest
from support.webhooks import link_telegram_chat, post_telegram, row_counts

from control.db import database
from control.models import ChatIdentity, LinkToken, Message, utcnow
from control.services import linking
from standins.telegram_updates import published_update, text_update
from wire.protocol import Envelope, messages_stream

CHAT = 777001


@pytest.fixture
def linked(client, tenant):
    return link_telegram_chat(client, tenant, CHAT)


def _inbox(runtime, tenant):
    deliveries = runtime.bus.read([messages_stream(str(tenant.id))], "test-reader", "t", count=100)
    return [Envelope.from_json(d.payload) for d in deliveries]


def _replies(runtime):
    """Texts the control plane queued for Telegram (its send_channel_text tasks)."""
    return [task.args[2] for task in runtime.huey.pending()
            if task.name == "send_channel_text" and task.args[0] == "telegram"]


def test_wrong_or_missing_secret_is_401_and_stores_nothing(client):
    update = text_update(1, CHAT, "hello")
    for secret in ("wrong-secret", None, ""):
        response = post_telegram(client, update, secret=secret)
        assert response.status_code == 401
    assert sum(row_counts().values()) == 0


@pytest.mark.parametrize("raw", [b"{oops", b"[]", b'{"message": {}}', b'{"update_id": "7"}'])
def test_malformed_update_is_400(client, raw):
    response = post_telegram(client, None, raw=raw)
    assert response.status_code == 400
    assert sum(row_counts().values()) == 0


def test_unlinked_chat_is_told_how_to_link_and_reaches_no_agent(client, runtime, tenant):
    assert post_telegram(client, text_update(1, CHAT, "hello?")).json["outcome"] == "answered"
    assert "/start" in _replies(runtime)[0]
    assert _inbox(runtime, tenant) == []


def test_start_with_token_links_the_chat_once(client, runtime, linked):
    with database.connection_context():
        identity = ChatIdentity.get()
        assert (identity.channel, identity.chat_id, identity.tenant_id) == ("telegram", str(CHAT), linked.id)
        token = LinkToken.get()
        assert token.used_at is not None
    assert _replies(runtime)[-1].startswith("Linked!")
    # The same token from another chat is refused, and that chat stays unlinked.
    post_telegram(client, text_update(901, CHAT + 1, f"/start {token.token}"))
    assert "already used" in _replies(runtime)[-1]
    with database.connection_context():
        assert ChatIdentity.select().count() == 1


def test_expired_token_does_not_link(client, runtime, tenant):
    with database.connection_context():
        token = linking.issue_token(tenant, 3600)
        LinkToken.update(expires_at=utcnow() - timedelta(seconds=1)).execute()
    post_telegram(client, text_update(5, CHAT, f"/start {token.token}"))
    assert "expired" in _replies(runtime)[-1]
    with database.connection_context():
        assert ChatIdentity.select().count() == 0


def test_linked_text_becomes_one_envelope_even_when_telegram_retries(client, runtime, linked):
    update = text_update(10, CHAT, "What's on my calendar?")
    assert post_telegram(client, update).json["outcome"] == "published"
    assert post_telegram(client, update).json["outcome"] == "duplicate"
    [envelope] = _inbox(runtime, linked)
    assert (envelope.tenant, envelope.channel, envelope.chat_id, envelope.text) == (
        str(linked.id), "telegram", str(CHAT), "What's on my calendar?")
    with database.connection_context():
        assert Message.select().where(Message.direction == "in").count() == 1


def test_photo_caption_reaches_the_agent_with_its_attachment(client, runtime, linked):
    update = published_update("update_photo_caption")
    update["message"]["chat"]["id"] = CHAT
    update["message"]["chat"]["type"] = "private"
    post_telegram(client, update)
    assert _inbox(runtime, linked) == []  # its file is stored first: tests/control/test_media_*.py
    [task] = [t for t in runtime.huey.pending() if t.name == "ingest_media"]
    envelope = Envelope.from_json(task.args[0])
    assert envelope.text == update["message"]["caption"]
    assert envelope.attachments[0]["kind"] == "image"


@pytest.mark.parametrize("name", [
    "update_edited_message", "update_callback_query", "update_voice",
    "official_webhooks_guide/update_text_start", "official_webhooks_guide/update_edited_message",
    "official_webhooks_guide/update_voice", "official_webhooks_guide/update_callback_query",
])
def test_every_other_update_kind_gets_200(client, name):
    response = post_telegram(client, published_update(name))
    assert response.status_code == 200
    assert response.json["ok"] is True


def test_help_is_answered_by_the_control_plane(client, runtime, linked):
    post_telegram(client, text_update(20, CHAT, "/help"))
    assert "/remember" in _replies(runtime)[-1]
    assert _inbox(runtime, linked) == []


def test_bus_outage_answers_503_and_records_nothing(client, runtime, linked, monkeypatch):
    from wire.errors import BusUnavailable

    def down(*args, **kwargs):
        raise BusUnavailable("bus is down")

    before = row_counts()
    monkeypatch.setattr(runtime.bus, "append", down)
    update = text_update(30, CHAT, "are you there?")
    assert post_telegram(client, update).status_code == 503
    assert row_counts() == before
    monkeypatch.undo()
    assert post_telegram(client, update).json["outcome"] == "published"
