"""``GET /media/<token>``: the files users sent, for their agents (issue #12).

The token is a signed ``{tenant, key}`` (``control.services.media.MediaSigner``) valid for
``MEDIA_URL_TTL`` seconds; whoever holds the URL gets the bytes, as with a pre-signed object
storage URL, so an agent needs no credential of its own.  A bad, expired, tampered or unknown
token, or a file already deleted (retention, account deletion), answers 404 without saying
which.  The answer is never rendered by a browser as a page: ``Content-Disposition:
attachment`` and ``X-Content-Type-Options: nosniff`` (a user-sent HTML or SVG file cannot run
script on our origin; accepted types are never HTML anyway), ``Cache-Control: private``
(the URL is a credential: no shared cache keeps it).
"""

from __future__ import annotations

from functools import cached_property

from flask import Blueprint, Response, current_app

from control.services import media
from control.web import runtime
from control.web.auth import secret_key

bp = Blueprint("media", __name__)


class _Media:
    """The app's media store and URL signer, built on first use from the runtime's settings
    (the same factory and key as the ``ingest_media`` task's: ``ControlTasks.media``)."""

    def __init__(self, settings):
        self.settings = settings

    @cached_property
    def store(self):
        return media.store_from_settings(self.settings)

    @cached_property
    def signer(self):
        return media.MediaSigner(secret_key(self.settings), self.settings.public_url)


def _media() -> _Media:
    extensions = current_app.extensions
    if "media" not in extensions:
        extensions["media"] = _Media(runtime().settings)
    return extensions["media"]


@bp.get("/media/<token>")
def download(token: str):
    """The stored file's bytes with its type (module docstring); 404 for anything else."""
    found = _media()
    stored = media.read(found.store, found.signer, token)
    return Response(stored.content, mimetype=stored.mime_type, headers={
        "Content-Disposition": media.attachment_disposition(stored.name),
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private"})
