"""Media storage and URLs: the same pipeline on moto's S3 server, signed URLs that 404 when bad,
expired, tampered or unknown (never a 500), retention, and account deletion."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from urllib.parse import urlsplit

import httpx
import pytest
from support.media import JPEG, OGG, fetch, inbox, run_media_tasks
from support.moto_s3 import ACCESS_KEY, REGION, SECRET_KEY, moto_s3_server, new_bucket
from support.webhooks import link_telegram_chat, post_telegram

from control.db import database
from control.models import Tenant
from control.services import lifecycle, media
from control.web.auth import secret_key
from standins.telegram_bot_api import TelegramBotApiStandin
from standins.telegram_updates import published_update
from wire.protocol import MEDIA_URL_TTL

CHAT = 12345  # realdata update_voice.json


# A deleted file: our route answers 404; S3 answers a presigned GET of a missing key 403 when
# the signer may not list the bucket (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetObject.html).
GONE = (403, 404)


@pytest.fixture
def db_backend():
    return "sqlite"


@pytest.fixture(scope="module")
def moto_endpoint():
    """moto's real S3 server on a free loopback port."""
    with moto_s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bot_api():
    with TelegramBotApiStandin() as api:
        yield api


@pytest.fixture(params=["local", "s3"])
def settings(request, settings, bot_api):
    overrides = {"telegram_api_base": bot_api.base_url}
    if request.param == "s3":
        endpoint = request.getfixturevalue("moto_endpoint")
        overrides.update(media_bucket=new_bucket(endpoint, "media"), archive_s3_endpoint=endpoint,
                         archive_access_key=ACCESS_KEY, archive_secret_key=SECRET_KEY,
                         archive_region=REGION)
    return settings.with_overrides(**overrides)


@pytest.fixture
def linked(client, tenant):
    return link_telegram_chat(client, tenant, CHAT)


@pytest.fixture
def store(runtime):
    return media.store_from_settings(runtime.settings)


def _voice(client, runtime, bot_api, tenant) -> dict:
    """A published voice note, ingested; returns its attachment."""
    bot_api.add_file("dfghjjghdjhgd", OGG, "voice/file_3.oga")
    post_telegram(client, published_update("update_voice"))
    run_media_tasks(runtime.huey)
    [envelope] = inbox(runtime, tenant)
    return envelope.attachments[0]


def test_voice_note_is_stored_in_the_configured_store_and_served_back(
        client, runtime, bot_api, linked, store):
    attachment = _voice(client, runtime, bot_api, linked)
    [key] = store.list_keys("media/")
    assert key.startswith(f"media/{runtime.settings.env}/{linked.id}/")
    assert store.get_bytes(key) == OGG
    assert fetch(client, attachment["url"]).data == OGG
    assert attachment["sha256"] == hashlib.sha256(OGG).hexdigest()


def test_with_a_bucket_the_agent_downloads_from_object_storage_not_the_control_plane(
        client, runtime, bot_api, linked, store):
    attachment = _voice(client, runtime, bot_api, linked)
    url = urlsplit(attachment["url"])
    if not runtime.settings.media_bucket:
        assert url.path.startswith("/media/")  # the local store: the control plane's signed route
        return
    assert "X-Amz-Signature=" in url.query and url.netloc == urlsplit(runtime.settings.archive_s3_endpoint).netloc
    answer = httpx.get(attachment["url"], timeout=10)  # what the agent's fetch does
    assert answer.content == OGG and answer.headers["Content-Type"] == "audio/ogg"
    assert answer.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("token", ["garbage", "a" * 300, "%00", "eyJ0ZW5hbnQiOiIxIn0.AAAA.BBBB",
                                   "..", "ünïcode"])
def test_bad_tokens_are_404_never_500(client, linked, token):
    answer = client.get(f"/media/{token}")
    assert answer.status_code == 404
    assert answer.json == {"error": "not_found", "message": "no such file"}


def test_tampered_expired_unknown_or_foreign_tokens_are_404(
        client, runtime, bot_api, linked, store, monkeypatch):
    url = _voice(client, runtime, bot_api, linked)["url"]
    token = url.rsplit("/", 1)[1]
    tampered = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert client.get(f"/media/{tampered}").status_code == 404
    signer = media.MediaSigner(secret_key(runtime.settings), runtime.settings.public_url)
    [key] = store.list_keys("media/")
    signed_at = time.time() - MEDIA_URL_TTL - 60  # a URL signed 7 days and a minute ago
    with monkeypatch.context() as frozen:
        frozen.setattr(time, "time", lambda: signed_at)
        expired = signer.url(str(linked.id), key)
    assert fetch(client, expired).status_code == 404
    assert fetch(client, signer.url(str(linked.id), key + "9")).status_code == 404  # unknown
    assert fetch(client, signer.url("999", key)).status_code == 404  # another tenant's claim
    other = media.MediaSigner("another-secret", runtime.settings.public_url)
    assert fetch(client, other.url(str(linked.id), key)).status_code == 404
    assert fetch(client, url).status_code == 200  # the real one still works


def test_retention_deletes_old_media_and_keeps_recent(client, runtime, bot_api, linked, store):
    attachment = _voice(client, runtime, bot_api, linked)
    old_key = f"media/{runtime.settings.env}/{linked.id}/old-envelope/0"
    store.put_bytes(old_key, JPEG, {"content-type": "image/jpeg", "stored-at": (
        dt.datetime.now(dt.UTC) - dt.timedelta(days=31)).isoformat()})
    assert runtime.tasks.prune_media.call_local() == 1
    assert old_key not in store.list_keys("media/") and len(store.list_keys("media/")) == 1
    assert fetch(client, attachment["url"]).status_code == 200
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    assert len(media.prune(store, runtime.settings.env, 30, now=later)) == 1
    assert fetch(client, attachment["url"]).status_code in GONE  # gone, never a 500


def test_account_deletion_removes_the_tenants_media(client, runtime, bot_api, linked, store):
    attachment = _voice(client, runtime, bot_api, linked)
    someone_else = f"media/{runtime.settings.env}/{linked.id + 1}/e/0"
    store.put_bytes(someone_else, JPEG, {"content-type": "image/jpeg",
                                         "stored-at": dt.datetime.now(dt.UTC).isoformat()})
    with database.connection_context():
        lifecycle.delete_tenant_data(Tenant.get_by_id(linked.id), runtime)
    assert store.list_keys(f"media/{runtime.settings.env}/{linked.id}/") == []
    assert store.list_keys("media/") == [someone_else]
    assert fetch(client, attachment["url"]).status_code in GONE


def test_a_files_type_comes_from_the_platform_else_its_bytes_else_its_name():
    from control.channels.base import MediaFile

    assert media.resolve_type(MediaFile(JPEG, "application/octet-stream")) == "image/jpeg"
    assert media.resolve_type(MediaFile(b"# notes\n", "application/octet-stream", "notes.md")) \
        == "text/markdown"
    assert media.resolve_type(MediaFile(b"\0\1", "", "blob")) == "application/octet-stream"
    assert media.resolve_type(MediaFile(b"", "Audio/X-M4A; codecs=mp4a")) == "audio/mp4"
