"""Media on every channel (issue #12): inbound files downloaded, kept per tenant, signed URLs.

The pipeline, the same for every platform (the attachment contract is in
``wire.protocol.Envelope``'s docstring):

1. A webhook never downloads.  Routing (``control.services.channel_routing.publish``, which the
   Telegram routing and every other platform's routing call) records the inbound message as
   received now and, when the envelope has attachments, hands the envelope's JSON to the
   ``ingest_media`` Huey task (``control.tasks``) instead of appending it to the bus.
2. The task calls ``ingest_and_publish``: for each attachment ``adapter.fetch_media(attachment,
   max_bytes)`` (the adapter of the envelope's channel), then ``ingest_one`` checks the MIME type
   against ``ACCEPTED_TYPES`` (inferring it from the bytes when the platform says
   ``application/octet-stream``), stores the bytes under ``media_key`` and adds ``mime_type``,
   ``size``, ``name``, ``sha256`` and a signed ``url`` (``MediaSigner``); then it appends the
   envelope to the tenant's inbox with ``idempotency_key`` = envelope id, so a retried task
   publishes once and overwrites the same objects.
3. Failures: too large → ``error: too_large`` (with ``size`` and ``limit``); a type not accepted
   → ``unsupported``; a permanent platform refusal → ``unavailable``; a transient one (5xx,
   timeout, rate limit, object storage down) raises, and Huey retries with backoff; on the last
   attempt (``final_attempt``) it becomes ``unavailable`` and the message is published anyway.
4. ``GET /media/<token>`` (``control.web.media``) answers the bytes to whoever holds the URL
   until ``MEDIA_URL_TTL`` passes (``read``).  ``prune`` deletes media older than the retention
   period (a daily Huey task), ``delete_tenant`` all of a tenant's media (account deletion).

A new platform (WhatsApp) implements ``ChannelAdapter.fetch_media``, is listed in
``Runtime.channel_adapters()`` (the task picks the adapter named by ``Envelope.channel``), and
its routing publishes through ``channel_routing.publish(envelope, bus, rt.tasks.ingest_media)``
(or ``route_inbound(..., ingest_media=rt.tasks.ingest_media)``) inside its routing transaction,
after writing the ``Message`` row.  Its inbound attachments carry ``kind``, ``file_id`` and
what its ``fetch_media`` needs; ``size``, ``mime_type`` and ``name`` when the platform says.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import mimetypes
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import filetype
from itsdangerous import BadData, URLSafeTimedSerializer

from control.channels.base import ChannelAdapter, ChannelError, MediaFile, MediaTooLarge
from control.errors import NotFound, ProvisioningError
from control.providers.archive import LocalObjectStore, ObjectStore, S3ObjectStore
from wire import logs
from wire.bus import Bus
from wire.protocol import MEDIA_URL_TTL, Envelope, messages_stream

log = logging.getLogger(__name__)

#: Telegram's Bot API downloads files of at most 20 MB (https://core.telegram.org/bots/api#getfile);
#: the default limit for every platform, so a file is refused alike wherever it was sent.
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
OCTET_STREAM = "application/octet-stream"
# What the agent can use: images for vision, audio for transcription (the formats the Whisper
# API and ffmpeg read: https://platform.openai.com/docs/guides/speech-to-text), PDF and text
# documents.  Telegram voice notes are audio/ogg (Opus), WhatsApp's audio/ogg or audio/amr,
# iOS recordings audio/mp4 (m4a).
ACCEPTED_TYPES = frozenset({
    "image/jpeg", "image/png", "image/webp", "image/gif",
    "audio/ogg", "audio/opus", "audio/mpeg", "audio/mp4", "audio/aac", "audio/amr", "audio/wav",
    "audio/webm",
    "application/pdf", "text/plain", "text/markdown", "text/csv",
})
# Other names platforms and libraries use for the same formats.
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "audio/x-m4a": "audio/mp4",
            "audio/m4a": "audio/mp4", "audio/x-wav": "audio/wav", "audio/wave": "audio/wav",
            "audio/vnd.wave": "audio/wav", "audio/mp3": "audio/mpeg", "audio/x-aac": "audio/aac",
            "audio/aacp": "audio/aac", "text/x-markdown": "text/markdown"}
_SALT = "media"
_PREFIX = "media"


@dataclass(frozen=True)
class StoredMedia:
    """One stored file as ``GET /media/<token>`` answers it: bytes, MIME type, sender's name."""

    content: bytes
    mime_type: str
    name: str


def media_key(env: str, tenant: str, envelope_id: str, index: int) -> str:
    """Return ``media/<env>/<tenant>/<envelope_id>/<index>``: the object of one attachment."""
    return f"{_PREFIX}/{env}/{tenant}/{envelope_id}/{index}"


def store_from_settings(settings) -> ObjectStore:
    """The media store: bucket ``MEDIA_BUCKET`` on the archive's S3 endpoint and credentials
    (``ARCHIVE_S3_ENDPOINT``, ``ARCHIVE_ACCESS_KEY``…: Hetzner Object Storage in production),
    or the directory ``<data_dir>/media`` when ``MEDIA_BUCKET`` is empty (embedded default)."""
    if settings.media_bucket:
        return S3ObjectStore(settings.media_bucket, endpoint_url=settings.archive_s3_endpoint or None,
                             access_key=settings.archive_access_key or None,
                             secret_key=settings.archive_secret_key or None,
                             region=settings.archive_region or None)
    return LocalObjectStore(Path(settings.data_dir) / "media")


class MediaSigner:
    """Signs and opens media URLs: an itsdangerous ``URLSafeTimedSerializer`` token over
    ``{"tenant", "key"}`` with the app's secret key (salt ``media``).

    Args:
        secret_key: ``HERMES_SECRET_KEY`` (``control.web.auth.secret_key``).
        public_url: the control plane's public URL (``HERMES_PUBLIC_URL``).
        max_age: seconds a URL stays valid (``wire.protocol.MEDIA_URL_TTL``).
    """

    def __init__(self, secret_key: str, public_url: str, max_age: int = MEDIA_URL_TTL):
        self._serializer = URLSafeTimedSerializer(secret_key, salt=_SALT)
        self.public_url = public_url.rstrip("/")
        self.max_age = max_age

    def url(self, tenant: str, key: str) -> str:
        """Return ``<public url>/media/<token>`` for object ``key`` of ``tenant``."""
        return f"{self.public_url}/media/{self._serializer.dumps({'tenant': tenant, 'key': key})}"

    def open(self, token: str) -> tuple[str, str]:
        """Return ``(tenant, key)`` of a token this signer made less than ``max_age`` ago.

        Raises:
            NotFound: bad signature, expired, malformed, or a key outside the tenant's media.
        """
        try:
            data = self._serializer.loads(token, max_age=self.max_age)
        except BadData as exc:
            raise NotFound("no such file") from exc
        tenant, key = (data.get("tenant"), data.get("key")) if isinstance(data, dict) else (None, None)
        if not (isinstance(tenant, str) and isinstance(key, str)
                and key.startswith(f"{_PREFIX}/") and key.split("/")[2:3] == [tenant]):
            raise NotFound("no such file")
        return tenant, key


def normalise_type(mime_type: str) -> str:
    """Lower-case ``mime_type`` without parameters, with aliases mapped (``audio/x-m4a`` →
    ``audio/mp4``); ``""`` stays ``""``."""
    base = mime_type.split(";")[0].strip().lower()
    return _ALIASES.get(base, base)


def resolve_type(file: MediaFile) -> str:
    """The file's MIME type: the platform's, unless it said nothing or ``application/octet-stream``;
    then the type its bytes show (``filetype``'s magic numbers), then its name's extension
    (``mimetypes``: text files have no magic number), else ``application/octet-stream``."""
    declared = normalise_type(file.mime_type)
    if declared and declared != OCTET_STREAM:
        return declared
    guess = filetype.guess_mime(file.content)
    if guess is None and file.name:
        guess = mimetypes.guess_type(file.name, strict=False)[0]
    return normalise_type(guess or OCTET_STREAM)


def attachment_disposition(name: str) -> str:
    """``Content-Disposition`` of a served file: ``attachment`` (never rendered as a page), with
    the sender's file name in RFC 6266's ``filename*`` (UTF-8, percent-encoded) when known."""
    return f"attachment; filename*=UTF-8''{quote(name, safe='')}" if name else "attachment"


def ingest_one(attachment: dict, file: MediaFile, store: ObjectStore, signer: MediaSigner,
               key: str, tenant: str) -> dict:
    """Check and store one downloaded attachment; return the attachment for the envelope.

    Returns:
        ``attachment`` plus ``mime_type``, ``size`` (bytes), ``name``, ``sha256`` and ``url``;
        or plus ``error: unsupported`` (with ``mime_type``, ``size``, ``name``) when the type
        is not in ``ACCEPTED_TYPES`` (nothing stored).

    Raises:
        ProvisioningError: object storage refused the file (transient: the task retries).
    """
    mime_type = resolve_type(file)
    name = file.name or str(attachment.get("name") or "")
    described = {**attachment, "mime_type": mime_type, "size": len(file.content), "name": name}
    if mime_type not in ACCEPTED_TYPES:
        return {**described, "error": "unsupported"}
    sha256 = hashlib.sha256(file.content).hexdigest()
    store.put_bytes(key, file.content, {
        "content-type": mime_type, "name": quote(name), "tenant": tenant, "sha256": sha256,
        "stored-at": dt.datetime.now(dt.UTC).isoformat()})
    # The agent downloads from object storage directly when it can sign a URL (no control-plane
    # hop); the local store is served through the control plane's signed route.
    url = store.presigned_url(key, signer.max_age, mime_type, attachment_disposition(name)) \
        or signer.url(tenant, key)
    return {**described, "sha256": sha256, "url": url}


def ingest(envelope: Envelope, adapter: ChannelAdapter | None, store: ObjectStore,
           signer: MediaSigner, *, env: str, max_bytes: int = DEFAULT_MAX_BYTES,
           final_attempt: bool = False) -> Envelope:
    """Download, check and store every attachment of ``envelope``; return it with them resolved.

    Args:
        envelope: the envelope as routing built it (attachments with ``kind`` and ``file_id``
            and what the adapter needs).
        adapter: the channel's adapter (None: the channel cannot download; every file is
            ``unavailable``).
        store: the media store (``store_from_settings``).
        signer: signs the URLs.
        env: ``HERMES_ENV``, part of every key.
        max_bytes: the size limit, bytes (``HERMES_MEDIA_MAX_BYTES``).
        final_attempt: no retry follows: transient failures become ``unavailable``.

    Raises:
        ChannelError, ProvisioningError: a transient failure while not ``final_attempt``.
    """
    resolved = []
    for index, attachment in enumerate(envelope.attachments):
        key = media_key(env, envelope.tenant, envelope.id, index)
        try:
            if adapter is None:
                raise ChannelError(f"no adapter for {envelope.channel}", permanent=True)
            file = adapter.fetch_media(attachment, max_bytes)
            resolved.append(ingest_one(attachment, file, store, signer, key, envelope.tenant))
        except MediaTooLarge as exc:
            resolved.append({**attachment, "error": "too_large", "size": exc.size,
                             "limit": exc.limit})
        except (ChannelError, ProvisioningError) as exc:
            if not (final_attempt or getattr(exc, "permanent", False)):
                raise
            log.warning("attachment %d of %s unavailable: %s", index, envelope.id, exc)
            resolved.append({**attachment, "error": "unavailable"})
    return dataclasses.replace(envelope, attachments=resolved)


def ingest_and_publish(envelope_json: str, bus: Bus, adapters: dict[str, ChannelAdapter],
                       store: ObjectStore, signer: MediaSigner, *, env: str,
                       max_bytes: int = DEFAULT_MAX_BYTES, final_attempt: bool = False) -> Envelope:
    """The ``ingest_media`` task's work: ``ingest`` the envelope, then append it to the tenant's
    inbox with ``idempotency_key`` = its id (a retried task publishes once).

    Args:
        envelope_json: ``Envelope.to_json()`` as routing enqueued it.
        adapters: ``{channel: ChannelAdapter}``; the envelope's channel picks one.
        Others: as for ``ingest``.

    Returns:
        The published envelope.

    Raises:
        ChannelError, ProvisioningError: transient download or storage failure (retry).
        wire.errors.BusUnavailable: the bus is down (retry; the stored files are overwritten).
    """
    envelope = Envelope.from_json(envelope_json)
    with logs.bound(tenant=envelope.tenant, envelope_id=envelope.id):
        envelope = ingest(envelope, adapters.get(envelope.channel), store, signer, env=env,
                          max_bytes=max_bytes, final_attempt=final_attempt)
        bus.append(messages_stream(envelope.tenant), envelope.to_json(), idempotency_key=envelope.id)
        log.info("%s message with %d attachment(s) published for the agent", envelope.channel,
                 len(envelope.attachments))
    return envelope


def read(store: ObjectStore, signer: MediaSigner, token: str) -> StoredMedia:
    """Return the file a media URL's token names.

    Raises:
        NotFound: bad, expired or tampered token, or the file is gone (retention, deletion).
    """
    _tenant, key = signer.open(token)
    try:
        meta = store.metadata(key)
        content = store.get_bytes(key)
    except KeyError as exc:
        raise NotFound("no such file") from exc
    return StoredMedia(content, meta.get("content-type") or OCTET_STREAM, unquote(meta.get("name", "")))


def prune(store: ObjectStore, env: str, retention_days: int,
          now: dt.datetime | None = None) -> list[str]:
    """Delete this environment's media stored more than ``retention_days`` days ago
    (``HERMES_MEDIA_RETENTION_DAYS``); return the deleted keys.  An object without a readable
    ``stored-at`` is deleted too (it cannot be proven young)."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    deleted = []
    for key in store.list_keys(f"{_PREFIX}/{env}/"):
        try:
            stored_at = dt.datetime.fromisoformat(store.metadata(key)["stored-at"])
        except (KeyError, ValueError):
            stored_at = None
        if stored_at is None or stored_at < cutoff:
            store.delete(key)
            deleted.append(key)
    return deleted


def delete_tenant(store: ObjectStore, env: str, tenant: str) -> int:
    """Delete every media object of ``tenant`` (account deletion); return how many."""
    keys = store.list_keys(f"{_PREFIX}/{env}/{tenant}/")
    for key in keys:
        store.delete(key)
    return len(keys)
