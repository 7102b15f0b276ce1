"""Hold a stream slot for the life of a streamed response (``control.services.stream_slots``;
issue 19, finding 11): web-chat replies and MCP proxy calls."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, Response, current_app

from control.errors import TooManyRequests
from control.services.stream_slots import stream_slots
from control.settings import Settings

EXTENSION = "hermes_stream_slots"
# Seconds a refused client is asked to wait: about one web-chat poll cycle; streams end within
# seconds of a reply's final event.
RETRY_AFTER = 5
BUSY = ("Too many replies are streaming for this account at once. Wait for one to finish, "
        "then try again.")


def init_app(app: Flask, settings: Settings) -> None:
    """Count streams in the rate limiter's storage, capped at ``streams_per_tenant``."""
    app.extensions[EXTENSION] = stream_slots(settings.rate_limit_storage,
                                             settings.streams_per_tenant)


def take_slot(tenant_id: int) -> Callable[[], None]:
    """Take one of ``tenant_id``'s stream slots.

    Returns:
        The release function; pass it to ``Response.call_on_close`` (idempotent).

    Raises:
        TooManyRequests: the tenant holds its cap already (429, ``Retry-After``).
    """
    slots = current_app.extensions[EXTENSION]
    slot = slots.acquire(tenant_id)
    if slot is None:
        raise TooManyRequests(BUSY, retry_after=RETRY_AFTER, code="too_many_streams")
    return lambda: slots.release(tenant_id, slot)


def held_while_open(response: Response, release: Callable[[], None]) -> Response:
    """Release the slot when the server closes ``response`` (finished, or the client left)."""
    response.call_on_close(release)
    return response
