"""The media package's one error, and how attachments are named and sized in sentences."""

from __future__ import annotations

# How a file with no name is called in a sentence, by attachment kind (wire.protocol.ATTACHMENT_KINDS).
_UNNAMED = {"image": "your photo", "voice": "your voice note", "audio": "your audio file",
            "document": "your document", "video": "your video", "sticker": "your sticker",
            "file": "your file"}


class MediaError(Exception):
    """An attachment could not be used; ``str(exc)`` is one complete sentence for the user.

    The turn still answers the rest of the message: this error ends only the handling of the
    one file it is about.
    """


class TranscriptionError(MediaError):
    """The transcription service failed; ``str(exc)`` is the reason phrase (no sentence),
    which the caller places in a sentence naming the file."""


def label(attachment: dict) -> str:
    """Return how ``attachment`` is named to the user: its file name, else e.g. ``your voice note``."""
    return attachment.get("name") or _UNNAMED.get(attachment.get("kind", ""), "your file")


def human_size(size: int) -> str:
    """Return ``size`` (bytes) for a sentence: ``30 MB``, ``4.5 MB``, ``12 KB``.

    Binary multiples labelled MB/KB, the way Telegram ("20 MB" = 20 MiB) and WhatsApp state
    their limits, so the figures we print match the ones users see in their apps.
    """
    if size >= 1024 * 1024:
        value, unit = size / (1024 * 1024), "MB"
    elif size >= 1024:
        value, unit = size / 1024, "KB"
    else:
        return f"{size} bytes"
    return f"{value:.0f} {unit}" if value >= 10 or value.is_integer() else f"{value:.1f} {unit}"
