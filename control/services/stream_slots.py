"""Per-tenant cap on concurrent streams: web-chat replies and MCP proxy calls (issue 19,
finding 11).

gunicorn serves the control plane with ``control_workers`` x ``control_threads`` request slots
(3 x 8 = 24, ``roles/control/defaults/main.yml``).  A web-chat stream holds one for up to 120 s
(``web_chat.STREAM_TIMEOUT``) and an MCP stream up to 300 s between two bytes
(``control.web.mcp_proxy.TIMEOUT``); without a cap one account could hold every slot and the
Stripe and Telegram webhooks would wait.  Each tenant may hold ``cap`` streams at once
(``HERMES_STREAMS_PER_TENANT``); one more is refused (429).

The count must hold across gunicorn workers, so it lives where the rate limiter's counters do
(``HERMES_RATE_LIMIT_STORAGE``): ``RedisStreamSlots`` for ``redis://``/``rediss://``,
``MemoryStreamSlots`` for ``memory://`` (the embedded default: one process).  A slot expires
after ``SLOT_TTL`` seconds even if it is never released (a worker killed mid-stream).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

from control.errors import ConfigError

# Seconds: longer than the longest stream (an MCP stream may wait 300 s for a byte; nginx's
# stream read timeout is 150 s), so only a crashed worker's slot ever expires.
SLOT_TTL = 330
# Redis key per tenant: a sorted set of slot ids scored by their expiry (Unix seconds).  The
# ``hermes-control:`` prefix is outside every tenant ACL user's key patterns.
KEY = "hermes-control:stream-slots:{tenant}"


class StreamSlots(Protocol):
    """Counts a tenant's open streams against ``cap``."""

    cap: int

    def acquire(self, tenant_id: int) -> str | None:
        """Take a slot: its id, or None when the tenant holds ``cap`` already."""

    def release(self, tenant_id: int, slot: str) -> None:
        """Give a slot back (idempotent)."""


class RedisStreamSlots:
    """``StreamSlots`` shared by every gunicorn worker, in Redis."""

    def __init__(self, client: redis.Redis, cap: int, ttl: float = SLOT_TTL,
                 clock: Callable[[], float] = time.time):
        self.client, self.cap, self.ttl, self.clock = client, cap, ttl, clock

    def acquire(self, tenant_id: int) -> str | None:
        """Add a slot and count in one MULTI; over the cap, take it back and refuse.

        Raises:
            redis.RedisError: Redis is unreachable.
        """
        key, slot, now = KEY.format(tenant=tenant_id), secrets.token_hex(8), self.clock()
        pipe = self.client.pipeline(transaction=True)
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {slot: now + self.ttl})
        pipe.zcard(key)
        pipe.expire(key, math.ceil(self.ttl))
        held = pipe.execute()[2]
        if held > self.cap:
            self.client.zrem(key, slot)
            return None
        return slot

    def release(self, tenant_id: int, slot: str) -> None:
        """Remove the slot."""
        self.client.zrem(KEY.format(tenant=tenant_id), slot)


class MemoryStreamSlots:
    """``StreamSlots`` of one process (the embedded ``hermes serve``)."""

    def __init__(self, cap: int, ttl: float = SLOT_TTL, clock: Callable[[], float] = time.monotonic):
        self.cap, self.ttl, self.clock = cap, ttl, clock
        self._held: dict[int, dict[str, float]] = {}
        self._lock = threading.Lock()

    def acquire(self, tenant_id: int) -> str | None:
        """Take a slot unless the tenant holds ``cap`` unexpired ones."""
        now = self.clock()
        with self._lock:
            held = {s: until for s, until in self._held.get(tenant_id, {}).items() if until > now}
            if len(held) >= self.cap:
                self._held[tenant_id] = held
                return None
            slot = secrets.token_hex(8)
            held[slot] = now + self.ttl
            self._held[tenant_id] = held
            return slot

    def release(self, tenant_id: int, slot: str) -> None:
        """Remove the slot."""
        with self._lock:
            self._held.get(tenant_id, {}).pop(slot, None)


def stream_slots(storage_uri: str, cap: int) -> StreamSlots:
    """The ``StreamSlots`` for a flask-limiter storage URI (``HERMES_RATE_LIMIT_STORAGE``).

    Raises:
        ConfigError: a scheme other than ``memory``, ``redis`` or ``rediss``, or ``cap`` < 1.
    """
    if cap < 1:
        raise ConfigError("HERMES_STREAMS_PER_TENANT must be at least 1")
    scheme = storage_uri.partition("://")[0]
    if scheme == "memory":
        return MemoryStreamSlots(cap)
    if scheme in ("redis", "rediss"):
        return RedisStreamSlots(redis.Redis.from_url(storage_uri), cap)
    raise ConfigError(f"HERMES_RATE_LIMIT_STORAGE {scheme}:// cannot count streams "
                      "(use memory:// or redis://)")
