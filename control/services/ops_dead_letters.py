"""Dead letters for mission control (issue 21): list, requeue or discard them, via the bus.

A dead letter is an entry of ``<stream>:dead`` whose payload is the JSON record ``Bus.dead_letter``
writes: ``{"entry_id", "group", "reason", "payload", "attempts"}``.  Requeuing appends the
original payload to ``<stream>`` again (every group reads it anew; consumers are idempotent on
the envelope id, DESIGN.md "Contracts") and then deletes the dead letter; discarding only
deletes it.  Payloads are shown with secret-looking fields masked.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from control.errors import BadRequest, NotFound
from wire.bus import Bus

DEAD_SUFFIX = ":dead"
#: Dead letters shown per stream (the oldest first); the rest wait for these to be handled.
PAGE = 100
MASK = "***"
# JSON keys whose values are credentials (tokens, passwords, API keys, signatures).
_SECRET_KEY = re.compile(r"token|secret|password|passwd|api[_-]?key|authorization|signature|cookie",
                         re.IGNORECASE)
# Bus streams are ``hermes:<kind>:<tenant>`` (wire.protocol); nothing else is requeued.
_STREAM = re.compile(r"^hermes:[A-Za-z0-9_:.-]{1,200}:dead$")


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as mission control shows it.

    Attributes:
        stream: the dead-letter stream (``hermes:messages:5:dead``).
        entry_id: its id in that stream.
        source: the stream it came from (``hermes:messages:5``).
        group: the consumer group that gave up on it.
        reason: why.
        attempts: deliveries before it was given up.
        payload: the original payload, secrets masked (text).
    """

    stream: str
    entry_id: str
    source: str
    group: str
    reason: str
    attempts: int
    payload: str


def mask(value: Any) -> Any:
    """Return ``value`` (decoded JSON) with the values of secret-looking keys replaced."""
    if isinstance(value, dict):
        return {k: MASK if _SECRET_KEY.search(str(k)) else mask(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask(v) for v in value]
    return value


def _record(raw: str) -> dict[str, Any]:
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    return record if isinstance(record, dict) else {"payload": raw, "reason": "unreadable record"}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _masked_payload(payload: Any) -> str:
    if not isinstance(payload, str):
        payload = json.dumps(payload)
    try:
        return json.dumps(mask(json.loads(payload)), indent=2, sort_keys=True)
    except ValueError:
        return payload


def check_stream(stream: str) -> str:
    """Return ``stream``; raises BadRequest unless it names a dead-letter stream of the bus."""
    if not _STREAM.match(stream or ""):
        raise BadRequest("not a dead-letter stream")
    return stream


def counts(bus: Bus) -> dict[str, int]:
    """``{dead-letter stream: entries}`` for every stream that holds some."""
    return {stream: bus.length(stream) for stream in bus.dead_letter_streams()}


def listing(bus: Bus, limit: int = PAGE) -> list[DeadLetter]:
    """Up to ``limit`` dead letters of each dead-letter stream, streams by name, oldest first."""
    out = []
    for stream in bus.dead_letter_streams():
        for entry_id, raw in bus.entries(stream, limit):
            record = _record(raw)
            out.append(DeadLetter(
                stream=stream, entry_id=entry_id, source=stream.removesuffix(DEAD_SUFFIX),
                group=str(record.get("group", "")), reason=str(record.get("reason", "")),
                attempts=_count(record.get("attempts")),
                payload=_masked_payload(record.get("payload", ""))))
    return out


def _find(bus: Bus, stream: str, entry_id: str) -> dict[str, Any]:
    check_stream(stream)
    # A dead letter is looked up among the stream's first PAGE entries (those the page shows).
    for found_id, raw in bus.entries(stream, PAGE):
        if found_id == entry_id:
            return _record(raw)
    raise NotFound(f"no dead letter {entry_id} in {stream}")


def requeue(bus: Bus, stream: str, entry_id: str) -> dict[str, str]:
    """Append a dead letter's original payload to its source stream, then delete it.

    Returns:
        ``{"stream", "entry_id", "requeued_as"}``: the new entry's id in the source stream.

    Raises:
        BadRequest: not a dead-letter stream, or the record has no payload to requeue.
        NotFound: no such dead letter (handled already).
        BusUnavailable: the bus cannot be reached (nothing or only the append happened; the
            consumers are idempotent, so requeuing again is harmless).
    """
    record = _find(bus, stream, entry_id)
    payload = record.get("payload")
    if not isinstance(payload, str) or not payload:
        raise BadRequest("this dead letter has no payload to requeue")
    new_id = bus.append(stream.removesuffix(DEAD_SUFFIX), payload)
    bus.remove(stream, entry_id)
    return {"stream": stream, "entry_id": entry_id, "requeued_as": new_id}


def discard(bus: Bus, stream: str, entry_id: str) -> dict[str, str]:
    """Delete a dead letter for good.

    Returns:
        ``{"stream", "entry_id", "reason"}``.

    Raises:
        BadRequest, NotFound: as ``requeue``.
    """
    record = _find(bus, stream, entry_id)
    bus.remove(stream, entry_id)
    return {"stream": stream, "entry_id": entry_id, "reason": str(record.get("reason", ""))}
