"""The Hetzner Cloud API budget shared by every provisioning worker (issue 22).

Hetzner allows 3,600 requests per hour per project, a bucket refilled at one request per second
(docs.hetzner.cloud, "Rate Limiting"); beyond it every call answers 429, including the sweeps and
status reads of the whole control plane.  ``ApiBudget`` is a token bucket with the same shape:
each ``pulumi up`` (whose provider makes its calls out of process, where they cannot be counted
one by one) takes its measured cost up front (``UP_REQUESTS``), a pool server's create takes
``CREATE_REQUESTS``, and a worker whose turn has not come waits instead of spending the project's
budget on 429s and backoffs.  With Redis configured the bucket lives there (one Lua script,
atomic, timed by Redis' own clock), so workers on several hosts share it; otherwise it is per
process.  It is an estimate, not Hetzner's counter: a 429 is still retried (``stacks``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from control.errors import ProvisioningError

#: Hetzner's bucket: requests per project, and its refill per second (docs.hetzner.cloud).
CAPACITY = 3600
REFILL_PER_SECOND = 1.0
#: hcloud API requests of one tenant ``pulumi up`` that creates (or imports) a server, an
#: estimate: the rehearsal engine makes 5 (``bench/load.py --scenario 2``: server type check,
#: create, one action poll, the reads that follow); the real provider polls the create action
#: with backoff for its ~15 s and reads the server back, so more are counted.
UP_REQUESTS = 12
#: Requests of one pool server's create: ``POST /servers`` and the action's polls.
CREATE_REQUESTS = 4

# KEYS[1]: the bucket hash; ARGV: capacity, refill per second, cost.  Returns "0" when taken,
# else the seconds to wait (as a string: Lua numbers become integers in replies).
_TAKE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local cap, rate, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = math.min(cap, (tonumber(v[1]) or cap) + (t - (tonumber(v[2]) or t)) * rate)
local wait = 0
if tokens >= cost then tokens = tokens - cost else wait = (cost - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(t))
redis.call('EXPIRE', KEYS[1], 7200)
return tostring(wait)
"""


class ApiBudget:
    """A token bucket of hcloud API requests.

    Args:
        capacity: the bucket's size and starting fill, requests.
        refill: requests added per second.
        redis: a Redis client (``decode_responses``) to keep the bucket in, shared by every
            worker using ``key``; ``None``: this process only.
        key: the Redis hash of the bucket, e.g. ``hermes:prod:hcloud-budget``.
        sleep, clock: injectable ``time.sleep`` / ``time.monotonic``.
    """

    def __init__(self, capacity: int = CAPACITY, refill: float = REFILL_PER_SECOND, *,
                 redis=None, key: str = "", sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.capacity, self.refill = capacity, refill
        self.redis, self.key = redis, key
        self._sleep, self._clock = sleep, clock
        self._tokens, self._at = float(capacity), clock()
        self._lock = threading.Lock()
        self._script = redis.register_script(_TAKE) if redis is not None else None

    def _try(self, cost: int) -> float:
        """Take ``cost`` now if the bucket holds it; return 0.0, else the seconds to wait."""
        if self._script is not None:
            return float(self._script(keys=[self.key], args=[self.capacity, self.refill, cost]))
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.refill)
            self._at = now
            if self._tokens >= cost:
                self._tokens -= cost
                return 0.0
            return (cost - self._tokens) / self.refill

    def take(self, cost: int, timeout: float = 900.0) -> float:
        """Wait until ``cost`` requests fit the budget and take them.

        Returns:
            The seconds waited.

        Raises:
            ProvisioningError: ``cost`` would not fit within ``timeout`` seconds (transient
                code: the task retries later).
        """
        waited = 0.0
        while (pause := self._try(cost)) > 0:
            if waited + pause > timeout:
                raise ProvisioningError(f"the hcloud API budget has no room for {cost} requests "
                                        f"within {timeout:g} s", code="provisioning_transient")
            self._sleep(pause)
            waited += pause
        return waited
