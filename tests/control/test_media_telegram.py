"""Telegram photos, voice notes and documents reach the agent as stored files behind signed URLs;
the webhook never downloads; oversize, unsupported and unreachable files are told apart."""

from __future__ import annotations

import copy
import time

import pytest
from support.media import JPEG, OGG, PDF, ZIP, fetch, inbox, run_media_tasks
from support.webhooks import link_telegram_chat, post_telegram

from control.db import database
from control.models import Message
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import published_update

CHAT = 11111111


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def bot_api():
    with TelegramBotApiStandin() as api:
        yield api


@pytest.fixture
def settings(settings, bot_api):
    return settings.with_overrides(telegram_api_base=bot_api.base_url)


@pytest.fixture
def linked(client, tenant):
    return link_telegram_chat(client, tenant, CHAT)


def _update(name: str, update_id: int = 5001) -> dict:
    update = copy.deepcopy(published_update(name))
    update["update_id"] = update_id
    update["message"]["chat"].update(id=CHAT, type="private")
    update["message"]["from"]["id"] = CHAT
    return update


# (payload, file id the adapter must download, bytes, kind, MIME type the agent is told)
CASES = [
    ("update_photo_caption", "SEES", JPEG, "image", "image/jpeg"),
    ("update_voice", "dfghjjghdjhgd", OGG, "voice", "audio/ogg"),
    ("update_document", "a1b2c34d5e6f7g8h9i", PDF, "document", "application/pdf"),
]


@pytest.mark.parametrize(("name", "file_id", "content", "kind", "mime_type"), CASES)
def test_published_media_update_reaches_the_agent_with_a_url_serving_the_same_bytes(
        client, runtime, bot_api, linked, name, file_id, content, kind, mime_type):
    bot_api.add_file(file_id, content, f"files/{file_id}")  # served as application/octet-stream
    update = _update(name)
    answer = post_telegram(client, update)
    assert answer.json["outcome"] == "published"
    assert inbox(runtime, linked) == []  # not before its files are stored

    assert run_media_tasks(runtime.huey) == 1
    [envelope] = inbox(runtime, linked)
    [attachment] = envelope.attachments
    assert (attachment["kind"], attachment["file_id"], attachment["mime_type"],
            attachment["size"]) == (kind, file_id, mime_type, len(content))
    assert envelope.text == update["message"].get("caption", "")
    response = fetch(client, attachment["url"])
    assert response.status_code == 200
    assert response.data == content
    assert response.mimetype == mime_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Content-Disposition"].startswith("attachment")
    assert response.headers["Cache-Control"] == "private"
    assert attachment["url"].startswith(runtime.settings.public_url + "/media/")


def test_document_keeps_the_senders_file_name(client, runtime, bot_api, linked):
    bot_api.add_file("a1b2c34d5e6f7g8h9i", PDF, "documents/file_7.pdf")
    post_telegram(client, _update("update_document"))
    run_media_tasks(runtime.huey)
    [attachment] = inbox(runtime, linked)[0].attachments
    assert attachment["name"] == "document.pdf"
    assert "document.pdf" in fetch(client, attachment["url"]).headers["Content-Disposition"]


def test_webhook_answers_before_anything_is_downloaded(client, runtime, bot_api, linked):
    bot_api.add_file("dfghjjghdjhgd", OGG, "voice/file_1.oga")
    post_telegram(client, _update("update_voice"))
    answered_at = time.monotonic()
    assert bot_api.calls_for("getFile") == [] and bot_api.downloads == []
    with database.connection_context():  # the message is on record from the webhook on
        assert Message.select().where(Message.direction == "in",
                                      Message.platform_message_id == "123456").count() == 1
    run_media_tasks(runtime.huey)
    [download] = bot_api.downloads
    assert download.at > answered_at and download.status == 200


def test_photo_uses_the_largest_size_under_the_limit():
    from control.channels.telegram import parse_update

    update = _update("update_photo_caption")
    assert parse_update(update).attachments[0]["file_id"] == "SEES"  # 104893 bytes, the largest
    assert parse_update(update, max_photo_bytes=90_000).attachments[0]["file_id"] == "SAAS"


def test_announced_size_over_the_limit_is_too_large_and_nothing_is_downloaded(
        client, runtime, bot_api, linked):
    update = _update("update_document")
    update["message"]["document"]["file_size"] = 21 * 1024 * 1024
    post_telegram(client, update)
    run_media_tasks(runtime.huey)
    [attachment] = inbox(runtime, linked)[0].attachments
    assert attachment["error"] == "too_large"
    assert (attachment["size"], attachment["limit"]) == (21 * 1024 * 1024, 20 * 1024 * 1024)
    assert "url" not in attachment and bot_api.downloads == []
    assert _stored(runtime) == []


def test_streamed_bytes_over_the_limit_stop_the_download(bot_api):
    # Neither the message nor getFile (file_size is optional) nor the file server
    # (no Content-Length) announce the size: only counting the bytes as they arrive catches it.
    from control.channels.base import MediaTooLarge
    from control.channels.telegram import BotApiClient
    from control.channels.telegram_adapter import TelegramAdapter

    big = PDF + bytes(8 * 1024 * 1024)
    bot_api.add_file("big", big, "documents/big.pdf", announce_length=False, report_size=False)
    adapter = TelegramAdapter(BotApiClient("123456:TEST", bot_api.base_url))
    try:
        with pytest.raises(MediaTooLarge) as raised:
            adapter.fetch_media({"kind": "document", "file_id": "big"}, 64 * 1024)
    finally:
        adapter.close()
    assert raised.value.limit == 64 * 1024 < raised.value.size < len(big)  # stopped early


def test_unsupported_type_is_refused_and_not_stored(client, runtime, bot_api, linked):
    update = _update("update_document")
    update["message"]["document"].update(mime_type="application/zip", file_name="photos.zip")
    bot_api.add_file("a1b2c34d5e6f7g8h9i", ZIP)
    post_telegram(client, update)
    run_media_tasks(runtime.huey)
    [attachment] = inbox(runtime, linked)[0].attachments
    assert (attachment["error"], attachment["mime_type"]) == ("unsupported", "application/zip")
    assert "url" not in attachment
    assert _stored(runtime) == []


def test_platform_5xx_is_retried_then_published_once_as_unavailable(client, runtime, bot_api, linked):
    from control.tasks import MEDIA_RETRIES

    bot_api.add_file("dfghjjghdjhgd", OGG)
    bot_api.fail_downloads(502, times=MEDIA_RETRIES + 1)
    post_telegram(client, _update("update_voice"))
    assert run_media_tasks(runtime.huey) == MEDIA_RETRIES + 1
    [envelope] = inbox(runtime, linked)
    assert envelope.attachments[0]["error"] == "unavailable"
    assert [d.status for d in bot_api.downloads] == [502] * (MEDIA_RETRIES + 1)


def test_a_transient_failure_then_success_publishes_the_file_once(client, runtime, bot_api, linked):
    bot_api.add_file("dfghjjghdjhgd", OGG)
    bot_api.fail_downloads(503, times=2)
    post_telegram(client, _update("update_voice"))
    post_telegram(client, _update("update_voice"))  # Telegram retried the webhook: a duplicate
    assert run_media_tasks(runtime.huey) == 3
    [envelope] = inbox(runtime, linked)
    assert fetch(client, envelope.attachments[0]["url"]).data == OGG
    assert len(_stored(runtime)) == 1


def test_unknown_file_id_is_unavailable_without_retries(client, runtime, bot_api, linked):
    post_telegram(client, _update("update_voice"))  # the stand-in knows no such file
    assert run_media_tasks(runtime.huey) == 1
    [envelope] = inbox(runtime, linked)
    assert envelope.attachments[0]["error"] == "unavailable"


def _stored(runtime) -> list[str]:
    from control.services import media

    return media.store_from_settings(runtime.settings).list_keys("media/")
