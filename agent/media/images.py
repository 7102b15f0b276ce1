"""Images as Anthropic image content blocks, checked against the API's limits.

Source: https://docs.anthropic.com/en/docs/build-with-claude/vision — supported types are
JPEG, PNG, GIF and WebP; an image may be at most 5 MB on the API (measured here on its base64
text, as the API counts it) and at most 8000×8000 px (2000×2000 px when a request carries more
than 20 images, hence ``MAX_IMAGES``).  The type is taken from the file's signature, not from
the sender's label: the API refuses a block whose ``media_type`` does not match its bytes.
Pillow is not a dependency, so a larger image is refused with a sentence rather than
downscaled (the API scales anything over 1568 px on its long edge down by itself).
"""

from __future__ import annotations

import base64
import struct

from agent.media.errors import MediaError, human_size

MAX_BASE64_BYTES = 5 * 1024 * 1024
MAX_EDGE = 8000
MAX_IMAGES = 20
MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def sniff(data: bytes) -> str | None:
    """Return the media type the bytes' signature shows (one of ``MEDIA_TYPES``), or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def dimensions(data: bytes, media_type: str) -> tuple[int, int] | None:
    """Return ``(width, height)`` in pixels from the image header, or None when unreadable."""
    try:
        if media_type == "image/png":
            return struct.unpack(">II", data[16:24])
        if media_type == "image/gif":
            return struct.unpack("<HH", data[6:10])
        if media_type == "image/webp":
            return _webp_size(data)
        return _jpeg_size(data)
    except struct.error:
        return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: 24-bit width-1 and height-1
        return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
    if chunk == b"VP8L":  # lossless: 14-bit width-1 and height-1 after the 0x2f signature
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":  # lossy: 14-bit sizes after the 3-byte start code
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    # Walk the marker segments to the first start-of-frame (SOF0-SOF15 but DHT, JPG, DAC).
    offset = 2
    while offset + 9 < len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
            return width, height
        offset += 2 + struct.unpack(">H", data[offset + 2:offset + 4])[0]
    return None


def image_block(data: bytes, name: str) -> dict:
    """Return the Anthropic content block for an image:
    ``{"type": "image", "source": {"type": "base64", "media_type", "data"}}``.

    Raises:
        MediaError: not JPEG/PNG/GIF/WebP, over 5 MB as base64, or over 8000 px on a side.
    """
    media_type = sniff(data)
    if media_type is None:
        raise MediaError(f"I can't look at {name}: I can see JPEG, PNG, GIF and WebP images only.")
    encoded = base64.b64encode(data).decode("ascii")
    if len(encoded) > MAX_BASE64_BYTES:
        raise MediaError(f"{name} is too large for me to look at ({human_size(len(data))}; images "
                         f"can be at most {human_size(MAX_BASE64_BYTES * 3 // 4)}). Send a smaller "
                         "version or a screenshot.")
    size = dimensions(data, media_type)
    if size is not None and max(size) > MAX_EDGE:
        raise MediaError(f"{name} is {size[0]}×{size[1]} pixels; I can look at images up to "
                         f"{MAX_EDGE}×{MAX_EDGE}. Send a smaller version.")
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": encoded}}
