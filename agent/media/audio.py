"""Audio made acceptable to the transcription API, converting with ffmpeg when it is not.

The OpenAI-compatible ``POST /audio/transcriptions`` accepts ``flac, mp3, mp4, mpeg, mpga, m4a,
ogg, wav, webm`` up to 25 MB, and tells the format by the uploaded file's extension
(https://platform.openai.com/docs/api-reference/audio/createTranscription, and the Speech to
text guide).  Anything else — AMR or 3GP from WhatsApp and older phones, AAC, CAF — or anything
larger is converted by ffmpeg (Debian package ``ffmpeg``) to 16 kHz mono Ogg/Opus at 24 kbit/s:
16 kHz is the rate Whisper resamples every input to, and at 24 kbit/s 25 MB holds over two hours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass

from agent.media.errors import MediaError

API_MAX_BYTES = 25 * 1024 * 1024
ACCEPTED_EXTENSIONS = frozenset({"flac", "mp3", "mp4", "mpeg", "mpga", "m4a", "ogg", "wav", "webm"})
# MIME type (parameters stripped) -> the accepted extension that names its format.
MIME_EXTENSIONS = {
    "audio/flac": "flac", "audio/x-flac": "flac", "audio/mpeg": "mp3", "audio/mp3": "mp3",
    "audio/mpga": "mpga", "audio/mp4": "m4a", "audio/m4a": "m4a", "audio/x-m4a": "m4a",
    "video/mp4": "mp4", "audio/ogg": "ogg", "audio/opus": "ogg", "application/ogg": "ogg",
    "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
    "audio/webm": "webm", "video/webm": "webm",
}
CONVERT_TIMEOUT = 120.0  # seconds; a two-hour recording converts in well under a minute
FFMPEG_ARGS = ("-vn", "-ac", "1", "-ar", "16000", "-c:a", "libopus", "-b:a", "24k",
               "-application", "voip", "-f", "ogg")


@dataclass(frozen=True)
class Upload:
    """Audio ready to send: ``filename`` (its extension names the format), ``data``, ``mime_type``."""

    filename: str
    data: bytes
    mime_type: str


def accepted_extension(mime_type: str, name: str) -> str | None:
    """Return the API's extension for this audio, or None when it needs converting.

    The MIME type decides (parameters such as ``; codecs=opus`` ignored); a generic or missing
    one falls back to the file name's extension.
    """
    bare = (mime_type or "").split(";")[0].strip().lower()
    if bare in MIME_EXTENSIONS:
        return MIME_EXTENSIONS[bare]
    extension = os.path.splitext(name or "")[1].lstrip(".").lower()
    if bare in ("", "application/octet-stream") and extension in ACCEPTED_EXTENSIONS:
        return extension
    return None


def for_transcription(data: bytes, mime_type: str, name: str, *,
                      timeout: float = CONVERT_TIMEOUT) -> Upload:
    """Return ``data`` as an upload the API accepts, converting only when needed.

    Raises:
        MediaError: conversion was needed and ffmpeg is missing, failed or took too long, or
            the result is still over the API's 25 MB.
    """
    stem = os.path.splitext(os.path.basename(name or ""))[0] or "voice"
    extension = accepted_extension(mime_type, name)
    if extension is not None and len(data) <= API_MAX_BYTES:
        return Upload(f"{stem}.{extension}", data, (mime_type or "").split(";")[0].strip()
                      or f"audio/{extension}")
    converted = to_ogg_opus(data, name or stem, timeout=timeout)
    if len(converted) > API_MAX_BYTES:
        raise MediaError(f"{name or 'This recording'} is too long to transcribe (over two hours).")
    return Upload(f"{stem}.ogg", converted, "audio/ogg")


def to_ogg_opus(data: bytes, name: str, *, timeout: float = CONVERT_TIMEOUT) -> bytes:
    """Convert any audio (or video's sound) ffmpeg can read to 16 kHz mono Ogg/Opus.

    Works on temporary files, not pipes: MP4 and 3GP keep their index (``moov``) at the end,
    which ffmpeg can only reach in a seekable input.

    Raises:
        MediaError: ffmpeg is not installed, cannot read the input, or exceeds ``timeout`` s.
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise MediaError(f"I can't convert {name} for transcription: ffmpeg is not installed on "
                         "my machine.")
    with tempfile.TemporaryDirectory(prefix="hermes-audio-") as work:
        source, target = os.path.join(work, "input"), os.path.join(work, "output.ogg")
        with open(source, "wb") as handle:
            handle.write(data)
        try:
            done = subprocess.run([ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                                   "-i", source, *FFMPEG_ARGS, target],
                                  capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise MediaError(f"Converting {name} took too long, so I couldn't transcribe it.") from exc
        if done.returncode != 0 or not os.path.exists(target):
            raise MediaError(f"I couldn't read the audio in {name}; it may be damaged or in a "
                             "format I don't know.")
        with open(target, "rb") as handle:
            return handle.read()
