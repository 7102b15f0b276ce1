"""Discord DM attachments: downloaded from the CDN after the Gateway dispatch was routed, stored,
and handed to the agent as signed URLs; oversize (announced or streamed) and expired links."""

from __future__ import annotations

import pytest
from support.discord import api_overrides
from support.media import JPEG, OGG, PDF, fetch, inbox, run_media_tasks

from control.db import database
from control.services import linking
from control.services.discord_routing import on_gateway_dispatch
from standins.discord_api import DiscordApiStandin

USER, CHANNEL = "53908099506183680", "290926798999357250"  # realdata message_object_example.json


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture
def discord_api():
    with DiscordApiStandin() as api:
        yield api


@pytest.fixture
def settings(settings, discord_api):
    # A 200 KB limit: every sample file fits, 500 KB does not.
    return settings.with_overrides(**api_overrides(discord_api), media_max_bytes=200_000)


@pytest.fixture
def linked(runtime, tenant):
    with database.connection_context():
        linking.redeem(linking.current_token(tenant, 3600).token, "discord", USER, USER)
    return tenant


def _dm(runtime, attachments: list, message_id: str = "334385199974967042", flags: int = 0) -> str:
    """Route a Gateway MESSAGE_CREATE for a DM (the docs' example message) as the gateway does."""
    data = {"id": message_id, "channel_id": CHANNEL, "content": "", "type": 0, "flags": flags,
            "author": {"id": USER, "username": "Mason", "discriminator": "9999", "avatar": None},
            "attachments": attachments, "embeds": [], "mentions": [], "mention_roles": [],
            "pinned": False, "mention_everyone": False, "tts": False,
            "timestamp": "2017-07-11T17:27:07.299000+00:00", "edited_timestamp": None}
    with database.connection_context():
        return on_gateway_dispatch("MESSAGE_CREATE", data, runtime.bus, lambda *a: None,
                                   envelope_key=runtime.envelope_key,
                                   ingest_media=runtime.tasks.ingest_media)


def test_dm_attachments_reach_the_agent_with_urls_serving_the_cdn_bytes(
        client, runtime, discord_api, linked):
    files = [discord_api.add_attachment(CHANNEL, JPEG, "cat.jpg", "image/jpeg"),
             discord_api.add_attachment(CHANNEL, PDF, "notes.pdf", "application/pdf")]
    assert _dm(runtime, files) == "published"
    assert discord_api.cdn_requests == []  # routing never downloads
    run_media_tasks(runtime.huey)
    [envelope] = inbox(runtime, linked)
    image, document = envelope.attachments
    assert (image["kind"], image["mime_type"], image["name"]) == ("image", "image/jpeg", "cat.jpg")
    assert (document["kind"], document["mime_type"]) == ("document", "application/pdf")
    assert fetch(client, image["url"]).data == JPEG
    assert fetch(client, document["url"]).data == PDF


def test_voice_message_is_a_voice_attachment(client, runtime, discord_api, linked):
    voice = discord_api.add_attachment(CHANNEL, OGG, "voice-message.ogg", "audio/ogg")
    _dm(runtime, [voice], flags=1 << 13)
    run_media_tasks(runtime.huey)
    [attachment] = inbox(runtime, linked)[0].attachments
    assert (attachment["kind"], attachment["mime_type"]) == ("voice", "audio/ogg")
    assert fetch(client, attachment["url"]).data == OGG


def test_type_is_inferred_from_the_bytes_when_discord_gives_none(client, runtime, discord_api, linked):
    untyped = discord_api.add_attachment(CHANNEL, JPEG, "IMG_0001", None)
    _dm(runtime, [untyped])
    run_media_tasks(runtime.huey)
    [attachment] = inbox(runtime, linked)[0].attachments
    assert (attachment["kind"], attachment["mime_type"]) == ("file", "image/jpeg")


def test_oversize_attachments_are_too_large_announced_or_streamed(client, runtime, discord_api, linked):
    big = PDF + bytes(300_000)
    announced = discord_api.add_attachment(CHANNEL, big, "announced.pdf", "application/pdf")
    streamed = discord_api.add_attachment(CHANNEL, big, "streamed.pdf", "application/pdf",
                                          announce_length=False)
    del streamed["size"]  # nothing announces it: the bytes are counted as they arrive
    _dm(runtime, [announced, streamed])
    run_media_tasks(runtime.huey)
    first, second = inbox(runtime, linked)[0].attachments
    assert (first["error"], first["size"], first["limit"]) == ("too_large", len(big), 200_000)
    assert second["error"] == "too_large" and 200_000 < second["size"] <= len(big)
    [(path, _, _)] = discord_api.cdn_requests  # the announced one was never requested
    assert "streamed.pdf" in path
    from control.services import media

    assert media.store_from_settings(runtime.settings).list_keys("media/") == []


def test_expired_link_is_unavailable_at_once_and_5xx_is_retried(client, runtime, discord_api, linked):
    expired = discord_api.add_attachment(CHANNEL, JPEG, "old.jpg", "image/jpeg")
    expired["url"] = expired["url"].replace("hm=", "hm=0")  # a link Discord no longer signs
    flaky = discord_api.add_attachment(CHANNEL, OGG, "flaky.ogg", "audio/ogg")
    discord_api.fail_cdn(500)  # the flaky one's first try (the expired link is 404 anyway)
    _dm(runtime, [expired, flaky])
    assert run_media_tasks(runtime.huey) == 2
    gone, retried = inbox(runtime, linked)[0].attachments
    assert gone["error"] == "unavailable"
    assert fetch(client, retried["url"]).data == OGG
