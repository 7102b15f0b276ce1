"""Streaming file downloads for ``ChannelAdapter.fetch_media`` with a byte limit.

One helper for every platform's file URL (Telegram's ``/file/bot<token>/<path>``, Discord's CDN,
Slack's ``url_private_download``): the answer is read in chunks and the download stops as soon as
the announced ``Content-Length`` or the bytes read pass the limit, so an oversized file costs at
most ``max_bytes`` plus one chunk.  Failures become the uniform ``ChannelError``: 5xx and
transport errors are transient (the media task retries them), 429 is a rate limit, any other
4xx is a permanent refusal (expired link, deleted file, no access).
"""

from __future__ import annotations

import httpx

from control.channels.base import ChannelError, MediaTooLarge

# Seconds to connect and between two chunks; a 20 MB file over a slow link still completes,
# a stalled server is given up (and the task retries).
DOWNLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


# Attachment kinds (``wire.protocol.ATTACHMENT_KINDS``) by top-level MIME type; PDF and text
# files are documents, anything else a plain file.
_KIND_BY_TYPE = {"image": "image", "audio": "audio", "video": "video", "text": "document"}


def kind_for(mime_type: str) -> str:
    """The attachment kind of a file the platform typed ``mime_type`` (``""`` → ``file``)."""
    if mime_type.lower().startswith("application/pdf"):
        return "document"
    return _KIND_BY_TYPE.get(mime_type.split("/")[0].lower(), "file")


def new_client() -> httpx.Client:
    """A plain HTTP client for file downloads (no platform credentials in its default headers)."""
    return httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True)


def download(http: httpx.Client, url: str, max_bytes: int,
             headers: dict[str, str] | None = None) -> tuple[bytes, str]:
    """GET ``url`` and return ``(content, content type)`` (the type without parameters, ``""``
    when absent).

    Args:
        http: the client (``new_client``); redirects across origins drop ``Authorization``
            (httpx's rule), so a bearer token never leaves the platform's host.
        url: the file's address.
        max_bytes: the largest body accepted, bytes.
        headers: extra request headers (Slack's ``Authorization: Bearer``).

    Raises:
        MediaTooLarge: ``Content-Length`` or the bytes received exceed ``max_bytes``.
        ChannelError: an HTTP error status (``permanent`` for 4xx other than 429; 429 with
            ``retry_after`` from ``Retry-After``) or a transport failure (status 0, transient).
    """
    try:
        with http.stream("GET", url, headers=headers) as response:
            _check_status(response)
            announced = response.headers.get("Content-Length", "")
            if announced.isdigit() and int(announced) > max_bytes:
                raise MediaTooLarge(int(announced), max_bytes)
            content = bytearray()
            for chunk in response.iter_bytes():
                content += chunk
                if len(content) > max_bytes:
                    raise MediaTooLarge(len(content), max_bytes)
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            return bytes(content), content_type
    except httpx.HTTPError as exc:
        # Not chained: the cause's text may carry the URL, and Telegram's holds the bot token.
        raise ChannelError(f"download failed: {type(exc).__name__}") from None


def _check_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    if status == 429:
        retry_after = response.headers.get("Retry-After", "")
        raise ChannelError("download rate limited", status=429,
                           retry_after=float(retry_after) if retry_after.isdigit() else 1.0)
    raise ChannelError(f"download refused: HTTP {status}", status=status, permanent=status < 500)
