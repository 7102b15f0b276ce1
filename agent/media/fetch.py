"""Download one attachment from the signed URL the control plane put on the envelope.

The contract (``wire.protocol.Envelope``): ``url`` answers the file's bytes to a plain GET;
``size`` (bytes) and ``sha256`` (hex) describe what it must return.  The download is capped at
the smaller of the announced size and the agent's own limit (``HERMES_AGENT_MEDIA_MAX_BYTES``), so a
wrong or hostile answer cannot fill the VM's memory, and must finish within ``timeout`` seconds
in total (httpx's timeouts apply per read, so a slow trickle is cut off here).
"""

from __future__ import annotations

import hashlib
import time

import httpx

from agent.media.errors import MediaError, human_size, label

DEFAULT_TIMEOUT = 60.0  # seconds for one whole download: 50 MB at ~7 Mbit/s
CHUNK = 64 * 1024


def fetch(attachment: dict, *, max_bytes: int, timeout: float = DEFAULT_TIMEOUT,
          client: httpx.Client | None = None) -> bytes:
    """Return the bytes of ``attachment`` (an envelope attachment with ``url``).

    Args:
        attachment: ``{"url", "size", "sha256", "name", "kind", ...}``.
        max_bytes: the agent's own limit in bytes.
        timeout: seconds for the whole download.
        client: an ``httpx.Client`` to reuse (default: one for this call).

    Raises:
        MediaError: too large, the server answered an error or too much, the download timed
            out or failed, or the bytes do not match ``sha256``.
    """
    name = label(attachment)
    size = attachment.get("size") or 0
    if size > max_bytes:
        raise MediaError(f"{name} is {human_size(size)}; the limit is {human_size(max_bytes)}, "
                         "so I didn't open it.")
    cap = size or max_bytes
    owned = client is None
    client = client or httpx.Client(follow_redirects=True)
    try:
        data = _download(client, attachment["url"], name, cap, timeout)
    except httpx.TimeoutException as exc:
        raise MediaError(f"Downloading {name} timed out; please send it again.") from exc
    except httpx.HTTPError as exc:
        raise MediaError(f"I couldn't download {name} ({type(exc).__name__}); please send it "
                         "again.") from exc
    finally:
        if owned:
            client.close()
    expected = (attachment.get("sha256") or "").lower()
    if expected and hashlib.sha256(data).hexdigest() != expected:
        raise MediaError(f"{name} arrived damaged (its checksum does not match); please send it "
                         "again.")
    return data


def _download(client: httpx.Client, url: str, name: str, cap: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    with client.stream("GET", url, timeout=timeout) as response:
        if response.status_code != 200:
            raise MediaError(f"I couldn't download {name} (the server answered "
                             f"{response.status_code}); please send it again.")
        announced = int(response.headers.get("Content-Length") or 0)
        if announced > cap:
            raise MediaError(f"{name} turned out larger than announced ({human_size(announced)}), "
                             "so I didn't open it.")
        parts, received = [], 0
        for chunk in response.iter_bytes(CHUNK):
            received += len(chunk)
            if received > cap:
                raise MediaError(f"{name} turned out larger than announced, so I didn't open it.")
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout("download deadline passed")
            parts.append(chunk)
    return b"".join(parts)
