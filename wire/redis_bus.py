"""``RedisBus``: the production implementation of the bus contract on Redis 7 Streams.

Each bus stream is a Redis stream whose entries hold one field, ``payload`` (the JSON text).
Command semantics follow the Redis documentation (https://redis.io/docs/data-types/streams/):

* ``append`` calls ``hermes_append``, a Redis Function of the ``LIBRARY`` the admin loads
  (``load_functions``; tenant users may ``FCALL`` it but run no script of their own, issue #19):
  one atomic step that returns the earlier id when the idempotency key ``{stream}:idem:{key}``
  exists, refuses an entry over ``MAX_ENTRY_BYTES``, refuses the entry while a consumer group
  has ``max_backlog`` entries or more unacknowledged (backpressure, see below), else
  ``XADD {stream} MAXLEN ~ retention * payload ...`` and ``SET {stream}:idem:{key} id EX ttl``
  (retention, backlog and TTL clamped on the server to ``MAX_STREAM_ENTRIES`` and 7 days).
  When Redis is out of memory (``maxmemory`` with ``noeviction``, roles/redis) it refuses the
  whole call with ``OOM`` before it runs; ``append`` then answers a retried key with its
  earlier id (``hermes_lookup``, a no-writes function), else runs ``hermes_trim_acked``
  (``XTRIM MINID`` below the oldest entry some group still needs: its oldest pending entry,
  else the entry after its last delivered one; never with no group; flagged ``allow-oom``
  since it only frees) and tries once more only when that freed entries, else raises
  ``BusBackpressure``.  Idempotency keys live under the stream's own key prefix so a tenant's
  ACL covers them.
* ``read`` creates the group on first use (``XGROUP CREATE ... 0 MKSTREAM``, BUSYGROUP is
  fine), claims entries idle longer than the visibility timeout (``XAUTOCLAIM``; attempts
  come from the delivery counter that ``XPENDING`` reports), then takes new entries
  (``XREADGROUP ... STREAMS s1 s2 > >``, blocking at most ``block`` seconds).
* ``ack`` is ``XACK``; ``dead_letter`` is ``XADD {stream}:dead`` + ``XACK`` in one
  ``MULTI``; ``pending_count`` is the ``XPENDING`` summary; ``length`` is ``XLEN``;
  ``delete_stream`` is ``UNLINK`` of the stream, ``{stream}:dead`` and every
  ``{stream}:idem:*`` key (found with ``SCAN MATCH``; needs an admin user).

A consumer must ``ack`` only after it has durably taken the message (e.g. its task is
committed to the agent's Huey queue); an entry never acked is handed out again after
``visibility_timeout`` seconds.  An entry without a ``payload`` field is moved to the
dead-letter stream with a log line and never reaches the consumer.

Bounded memory and backpressure: ``MAXLEN ~ retention`` keeps each stream near ``retention``
entries (Redis trims whole radix-tree nodes, so up to ``stream-node-max-entries``, 100 by
default, more).  Trimming must never remove an entry a group has not yet read, so ``append``
raises ``BusBackpressure`` (a ``BusUnavailable``: the webhook answers 503 and the platform
retries) while some group has ``max_backlog`` or more entries not yet acknowledged
(``XINFO GROUPS`` lag + pending; a stream with no group counts all its entries; Redis
reports no lag only after ``XDEL``, which this bus never issues, and then counts 0).

Failures: connection refused/reset is retried 3 times with backoff (0.1 + 0.2 + 0.2 s),
then raises ``BusUnavailable``; so does a socket timeout (``socket_timeout``, 5 s by default;
not retried, since re-sending an append could duplicate it).  Rejected credentials and ACL
denials raise ``BusAuthError``.  Nothing is reported as appended unless Redis confirmed it;
an append that timed out may still have happened, so retries pass an idempotency key.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import time
from contextlib import contextmanager
from typing import Any

import redis
import structlog
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from wire.bus import Bus, Delivery
from wire.errors import (
    BusAuthError,
    BusBackpressure,
    BusEntryTooLarge,
    BusTLSError,
    BusUnavailable,
    WireError,
)

log = structlog.get_logger(__name__)

IDEMPOTENCY_TTL = 7 * 24 * 3600  # seconds; longer than any platform's webhook retry window
SOCKET_TIMEOUT = 5.0  # seconds per reply; a blocking read waits in chunks shorter than this
CONNECT_TIMEOUT = 2.0  # seconds
# Error replies of a server refusing commands for now (https://redis.io/docs/reference/).
_UNAVAILABLE_CODES = {"OOM", "MISCONF", "READONLY", "LOADING", "MASTERDOWN", "BUSY"}
# redis-py prefixes errors from a pipeline with "Command # n (...) of pipeline caused error: ".
_ERROR_CODE = re.compile(r"(?:^|caused error: )([A-Z]+)\b")

# Largest payload one entry may carry (bytes of its UTF-8 JSON).  Half of the 1 MiB
# ``proto-max-bulk-len`` roles/redis sets (Redis's own minimum), so a legal entry never nears the
# protocol limit; the biggest honest entries (a long final reply, an envelope with attachment
# metadata) are a few tens of KiB.  ``hermes_append`` enforces it on the server, where a tenant
# cannot skip the check (issue #19, finding 3).
MAX_ENTRY_BYTES = 512 * 1024
# Upper bound on ``retention`` and ``max_backlog`` and on an idempotency key's TTL that the
# server-side function accepts from any caller: a tenant passing its own arguments cannot make
# its stream keep more entries, or its keys live longer, than an honest publisher would.
MAX_STREAM_ENTRIES = 100_000
LIBRARY_NAME = "hermes_bus"

# Redis Functions (https://redis.io/docs/interact/programmability/functions-intro/), loaded by
# the admin (``load_functions``); tenant users may only FCALL them, never EVAL or FUNCTION
# LOAD, so no tenant runs code of its own choosing (``while true do end`` would leave Redis
# BUSY for every tenant).  Functions run with the caller's ACL: a tenant's call touches only
# the keys its user may touch.
#
# hermes_append(stream[, idem_key]; payload, retention, max_backlog, ttl) -> {status, value}:
#   status 'duplicate' (value: the earlier id), 'full' (value: the backlog), 'appended' (id);
#   error 'ERR hermes entry too large ...' above MAX_ENTRY_BYTES.  No flags: Redis refuses the
#   call with OOM at maxmemory before it runs, so nothing is half-written.
# hermes_lookup(idem_key) -> the id appended under idem_key, or false (no-writes: runs at OOM).
# hermes_trim_acked(stream) -> {removed, error}: XTRIM MINID below the oldest entry some group
#   still needs (never with no group); allow-oom because XTRIM only frees memory.
LIBRARY = f"""#!lua name={LIBRARY_NAME}
local MAX_ENTRY_BYTES = {MAX_ENTRY_BYTES}
local MAX_STREAM_ENTRIES = {MAX_STREAM_ENTRIES}
local MAX_TTL = {7 * 24 * 3600}

local function bounded(value, low, high)
  local n = tonumber(value)
  if n == nil or n < low then return low end
  if n > high then return high end
  return math.floor(n)
end

local function append(keys, args)
  local stream, idem_key = keys[1], keys[2]
  local payload = args[1]
  if payload == nil then return redis.error_reply('ERR hermes_append needs a payload') end
  if #payload > MAX_ENTRY_BYTES then
    return redis.error_reply('ERR hermes entry too large: ' .. #payload .. ' bytes, limit ' ..
                             MAX_ENTRY_BYTES)
  end
  local retention = bounded(args[2], 1, MAX_STREAM_ENTRIES)
  local max_backlog = bounded(args[3], 1, MAX_STREAM_ENTRIES)
  local ttl = bounded(args[4], 1, MAX_TTL)
  if idem_key then
    local earlier = redis.call('GET', idem_key)
    if earlier then return {{'duplicate', earlier}} end
  end
  local backlog = redis.call('XLEN', stream)
  if backlog > 0 then
    local groups = redis.call('XINFO', 'GROUPS', stream)
    if #groups > 0 then backlog = 0 end
    for _, group in ipairs(groups) do
      local info = {{}}
      for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
      local waiting = info['pending'] + (info['lag'] or 0)
      if waiting > backlog then backlog = waiting end
    end
  end
  if backlog >= max_backlog then return {{'full', tostring(backlog)}} end
  local id = redis.call('XADD', stream, 'MAXLEN', '~', retention, '*', 'payload', payload)
  if idem_key then redis.call('SET', idem_key, id, 'EX', ttl) end
  return {{'appended', id}}
end

local function lookup(keys, args)
  return redis.call('GET', keys[1])
end

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function before(a, b)
  local ams, aseq = parse(a)
  local bms, bseq = parse(b)
  return ams < bms or (ams == bms and aseq < bseq)
end

local function trim_acked(keys, args)
  local stream = keys[1]
  if redis.call('XLEN', stream) == 0 then return {{0, ''}} end
  local groups = redis.call('XINFO', 'GROUPS', stream)
  if #groups == 0 then return {{0, ''}} end
  local floor = nil
  for _, group in ipairs(groups) do
    local info = {{}}
    for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
    local needed
    if info['pending'] > 0 then
      local summary = redis.pcall('XPENDING', stream, info['name'])
      if summary.err then return {{0, summary.err}} end
      needed = summary[2]
    else
      local ms, seq = parse(info['last-delivered-id'])
      needed = string.format('%d-%d', ms, seq + 1)
    end
    if floor == nil or before(needed, floor) then floor = needed end
  end
  local removed = redis.pcall('XTRIM', stream, 'MINID', floor)
  if type(removed) == 'table' then return {{0, removed.err}} end
  return {{removed, ''}}
end

redis.register_function{{function_name='hermes_append', callback=append}}
redis.register_function{{function_name='hermes_lookup', callback=lookup, flags={{'no-writes'}}}}
redis.register_function{{function_name='hermes_trim_acked', callback=trim_acked,
                         flags={{'allow-oom'}}}}
"""


def load_functions(client: redis.Redis) -> None:
    """Load (or replace) the ``hermes_bus`` function library on the server of ``client``.

    Needs the ``FUNCTION`` permission: the control plane's admin user, never a tenant's.
    Functions persist in the RDB and AOF like keys; ``bus_acl.grant`` and an admin bus that
    finds them missing load them again.

    Raises:
        BusAuthError: ``client`` may not load functions.
        BusUnavailable: Redis cannot be reached.
    """
    with translate_errors(client, "load the bus functions"):
        client.function_load(LIBRARY, replace=True)


def tls_options(url: str, ca_file: str = "") -> dict:
    """Return the redis-py TLS keyword arguments for ``url``: none for ``redis://``.

    A ``rediss://`` server must present a certificate that chains to ``ca_file`` (PEM; the
    private CA ``roles/redis`` issues) or, with no ``ca_file``, to the system's CAs, and that
    names the host of the URL (``ssl_check_hostname``; the role puts the private address and
    host name in its SANs).

    Raises:
        BusTLSError: ``ca_file`` is set but is not a readable file.
    """
    if not url.startswith("rediss://"):
        if ca_file:
            log.warning("bus.ca_file_unused", hint="the bus URL is not rediss://; no TLS")
        return {}
    options = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if ca_file:
        if not os.access(ca_file, os.R_OK) or not os.path.isfile(ca_file):
            raise BusTLSError(f"bus CA file {ca_file!r} (HERMES_BUS_CA_FILE) is not a readable "
                              f"file")
        options["ssl_ca_certs"] = ca_file
    return options


def connect(url: str, *, ca_file: str = "", socket_timeout: float = SOCKET_TIMEOUT,
            connect_timeout: float = CONNECT_TIMEOUT) -> redis.Redis:
    """Return a redis-py client for ``url`` after a successful ``PING``.

    Args:
        url: ``redis://[user:password@]host:port/db`` or ``rediss://`` (TLS).
        ca_file: PEM CA file that verifies a ``rediss://`` server (see ``tls_options``);
            ``""``: the system's CAs.
        socket_timeout: seconds to wait for any reply.
        connect_timeout: seconds to wait for the TCP (and TLS) connection.

    Raises:
        BusAuthError: Redis rejected the user or password (message names user and server).
        BusTLSError: the server's certificate failed verification, or ``ca_file`` is unusable.
        BusUnavailable: Redis cannot be reached.
    """
    client = redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        # Only connection errors: re-sending after a timeout could append twice.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 3,
                    supported_errors=(redis.ConnectionError,)),
        **tls_options(url, ca_file),
    )
    with translate_errors(client, "connect"):
        client.ping()
    return client


def reply_code(exc: Exception) -> str:
    """Return the error code of a Redis error reply (``NOGROUP``, ``BUSYGROUP``, ``ERR``, ...)."""
    match = _ERROR_CODE.search(str(exc))
    return match.group(1) if match else ""


def _describe(client: redis.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    user = kwargs.get("username") or "default"
    return f"user {user!r} at {kwargs.get('host')}:{kwargs.get('port')}"


@contextmanager
def translate_errors(client: redis.Redis, action: str):
    """Re-raise redis-py errors raised inside the block as the wire error hierarchy.

    Raises:
        BusAuthError: wrong password, revoked user, or an ACL denial (NOPERM).
        BusBackpressure: Redis is out of memory (``OOM command not allowed``): retry later.
        BusTLSError: the server's TLS certificate failed verification.
        BusUnavailable: connection refused/lost, timeout, or Redis refusing writes for now.
        WireError: any other error reply.
    """
    try:
        yield
    except redis.exceptions.OutOfMemoryError as exc:
        raise _out_of_memory(client, action, f"OOM {exc}") from exc
    except redis.AuthenticationError as exc:
        raise BusAuthError(
            f"Redis rejected {_describe(client)} during {action}: wrong password, or the user "
            f"was revoked or disabled (rotate it with `hermes bus grant TENANT`): {exc}"
        ) from exc
    except redis.exceptions.NoPermissionError as exc:
        raise BusAuthError(f"Redis ACL denies {_describe(client)} to {action}: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        if isinstance(exc.__context__, ssl.SSLCertVerificationError) or \
                "certificate verify failed" in str(exc):
            raise BusTLSError(f"Redis TLS certificate of {_describe(client)} failed "
                              f"verification during {action} (is HERMES_BUS_CA_FILE the CA "
                              f"that roles/redis issued?): {exc}") from exc
        raise BusUnavailable(f"Redis unavailable for {_describe(client)} during {action}: "
                             f"{exc}") from exc
    except redis.ResponseError as exc:
        code = reply_code(exc)
        if code == "OOM":
            raise _out_of_memory(client, action, str(exc)) from exc
        unavailable = code in _UNAVAILABLE_CODES or isinstance(exc, redis.exceptions.ReadOnlyError)
        error = BusUnavailable if unavailable else WireError
        raise error(f"Redis refused {action} for {_describe(client)}: {exc}") from exc


def _is_out_of_memory(exc: Exception) -> bool:
    return isinstance(exc, redis.exceptions.OutOfMemoryError) or reply_code(exc) == "OOM"


def _out_of_memory(client: redis.Redis, action: str, reply: str) -> BusBackpressure:
    return BusBackpressure(
        f"Redis is full and refused {action} for {_describe(client)} ({reply}); nothing was "
        f"written, retry later (runbooks/redis-down.md, 'Redis is full')")


class RedisBus(Bus):
    """Bus on a Redis 7 server (see the module docstring for the command mapping).

    Args:
        client: a redis-py client made with ``decode_responses=True`` (``connect`` makes one).
        visibility_timeout: seconds an entry may stay pending before it is handed out again.
        retention: entries kept per stream (``XADD MAXLEN ~``).
        max_backlog: entries a group may have unacknowledged before ``append`` raises
            ``BusBackpressure``; default 90 % of ``retention`` so trimming never removes an
            entry not yet read.
        idempotency_ttl: seconds an idempotency key is remembered.

    Raises:
        BusAuthError, BusUnavailable: the start-up ``PING`` failed.
    """

    def __init__(self, client: redis.Redis, visibility_timeout: float = 30.0,
                 retention: int = 100_000, max_backlog: int | None = None,
                 idempotency_ttl: int = IDEMPOTENCY_TTL):
        self._client = client
        self.visibility_timeout = visibility_timeout
        self.retention = retention
        self.max_backlog = max_backlog if max_backlog is not None else retention * 9 // 10
        self.idempotency_ttl = idempotency_ttl
        self._socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
        self._groups: set[tuple[str, str]] = set()
        self._cursors: dict[tuple[str, str], str] = {}
        self.ping()

    @classmethod
    def from_url(cls, url: str, visibility_timeout: float = 30.0, retention: int = 100_000,
                 *, ca_file: str = "", socket_timeout: float = SOCKET_TIMEOUT,
                 **options) -> RedisBus:
        """Connect to ``url`` (see ``connect``; ``ca_file`` verifies a ``rediss://`` server)
        and return a bus; ``options`` go to ``__init__``.

        Raises:
            BusAuthError: wrong password or revoked user, with a message naming the user.
            BusTLSError: the server's certificate failed verification against ``ca_file``.
            BusUnavailable: Redis cannot be reached.
        """
        client = connect(url, ca_file=ca_file, socket_timeout=socket_timeout)
        return cls(client, visibility_timeout=visibility_timeout, retention=retention, **options)

    def _errors(self, action: str):
        return translate_errors(self._client, action)

    # -- append ------------------------------------------------------------------------------

    def _fcall(self, function: str, keys: list[str], args: list) -> Any:
        """Call one of the ``LIBRARY`` functions, loading the library first if Redis lacks it.

        Only the admin may load it; a tenant's bus then raises ``BusUnavailable``.
        """
        try:
            return self._client.fcall(function, len(keys), *keys, *args)
        except redis.ResponseError as exc:
            if "function not found" not in str(exc).lower():
                raise
        try:
            load_functions(self._client)
        except BusAuthError as exc:
            raise BusUnavailable(f"the bus functions ({LIBRARY_NAME}) are not loaded on Redis; "
                                 f"the control plane loads them (`hermes bus grant`): "
                                 f"{exc}") from exc
        return self._client.fcall(function, len(keys), *keys, *args)

    def _append_args(self, stream: str, payload: str, key: str | None) -> tuple[list, list]:
        keys = [stream] if key is None else [stream, f"{stream}:idem:{key}"]
        return keys, [payload, self.retention, self.max_backlog, self.idempotency_ttl]

    def _append_reply(self, stream: str, payload: str, key: str | None) -> list:
        """Run ``hermes_append``; when Redis is full (OOM) answer a retried key with its earlier
        id, else trim acknowledged entries and try once more (OOM again propagates)."""
        try:
            return self._fcall("hermes_append", *self._append_args(stream, payload, key))
        except redis.ResponseError as exc:
            if not _is_out_of_memory(exc):
                raise
            if key is not None:
                earlier = self._fcall("hermes_lookup", [f"{stream}:idem:{key}"], [])
                if earlier:
                    return ["duplicate", earlier]
            if not self._trim_acked(stream, "out_of_memory"):
                raise
        return self._fcall("hermes_append", *self._append_args(stream, payload, key))

    def _trim_acked(self, stream: str, reason: str) -> int:
        """Run ``hermes_trim_acked``; return the entries removed (0 when the ACL denies it)."""
        removed, error = self._fcall("hermes_trim_acked", [stream], [])
        if error:
            log.warning("bus.trim_denied", stream=stream, error=error,
                        hint="the ACL user needs XPENDING and XTRIM on this stream")
        else:
            log.warning("bus.trimmed_acked", stream=stream, removed=removed, reason=reason)
        return int(removed)

    def trim_acked(self, stream: str, reason: str) -> int:
        """Remove the entries of ``stream`` every consumer group has acknowledged (the
        ``hermes_trim_acked`` function; nothing when the stream has no group).

        Args:
            stream: the stream's key.
            reason: why, for the log line (e.g. ``quota``).

        Returns:
            Entries removed (0 when the caller's ACL denies ``XPENDING``/``XTRIM``).

        Raises:
            BusAuthError, BusUnavailable: as for ``append``.
        """
        with self._errors(f"trim {stream}"):
            return self._trim_acked(stream, reason)

    def _entry_id(self, stream: str, reply: list) -> str:
        status, value = reply
        if status == "full":
            raise BusBackpressure(
                f"{stream}: a consumer group has {value} entries not yet acknowledged (limit "
                f"{self.max_backlog}); entry refused, retry later"
            )
        return value

    @staticmethod
    def _check_size(stream: str, payload: str) -> None:
        size = len(payload.encode())
        if size > MAX_ENTRY_BYTES:
            raise BusEntryTooLarge(f"{stream}: entry of {size} bytes refused; the bus carries at "
                                   f"most {MAX_ENTRY_BYTES} bytes per entry")

    def append(self, stream, payload, idempotency_key=None):
        """See ``Bus.append``; also raises ``BusBackpressure`` (backlog limit, or Redis out of
        memory even after trimming acknowledged entries), ``BusAuthError`` (ACL denial) and
        ``BusEntryTooLarge`` (payload above ``MAX_ENTRY_BYTES``; nothing sent)."""
        self._check_size(stream, payload)
        with self._errors(f"append to {stream}"):
            return self._entry_id(stream, self._append_reply(stream, payload, idempotency_key))

    def append_many(self, stream, payloads, idempotency_keys=None):
        """See ``Bus.append_many``: one pipelined round trip; each entry is checked separately
        (an entry Redis refused as out of memory, or before the functions were loaded, is
        retried alone as ``append`` would)."""
        keys = idempotency_keys if idempotency_keys is not None else [None] * len(payloads)
        for payload in payloads:
            self._check_size(stream, payload)
        with self._errors(f"append to {stream}"):
            pipe = self._client.pipeline(transaction=False)
            for payload, key in zip(payloads, keys, strict=True):
                names, args = self._append_args(stream, payload, key)
                pipe.fcall("hermes_append", len(names), *names, *args)
            replies = pipe.execute(raise_on_error=False)
            ids = []
            for payload, key, piped in zip(payloads, keys, replies, strict=True):
                reply = piped
                if isinstance(piped, redis.ResponseError) and (
                        _is_out_of_memory(piped) or "function not found" in str(piped).lower()):
                    reply = self._append_reply(stream, payload, key)
                elif isinstance(piped, Exception):
                    raise piped
                ids.append(self._entry_id(stream, reply))
            return ids

    # -- read --------------------------------------------------------------------------------

    def read(self, streams, group, consumer, count=10, block=0.0):
        """See ``Bus.read``; ``count`` bounds each stream (``XREADGROUP COUNT``)."""
        streams = list(streams)
        deadline = time.monotonic() + block
        # Longest single XREADGROUP BLOCK: the reply must arrive before the socket timeout, and
        # a blocked reader must look for expired entries again within half a visibility timeout.
        chunk = max(0.05, min(self._socket_timeout or 120.0, self.visibility_timeout) / 2)
        with self._errors(f"read {streams} as group {group!r}"):
            while True:
                wait = min(chunk, deadline - time.monotonic())
                deliveries = self._read_once(streams, group, consumer, count, wait)
                if deliveries or time.monotonic() >= deadline:
                    return deliveries

    def _read_once(self, streams, group, consumer, count, wait) -> list[Delivery]:
        try:
            return self._take(streams, group, consumer, count, wait)
        except redis.ResponseError as exc:
            if reply_code(exc) != "NOGROUP":
                raise
            # The stream or group vanished (deleted, or a restart without persistence).
            self._groups.difference_update((stream, group) for stream in streams)
            return self._take(streams, group, consumer, count, wait)

    def _take(self, streams, group, consumer, count, wait) -> list[Delivery]:
        self._ensure_groups(streams, group)
        taken = self._claim_expired(streams, group, consumer, count)
        if len(taken) < count:
            block_ms = int(wait * 1000) if wait > 0 and not taken else None
            reply = self._client.xreadgroup(group, consumer, dict.fromkeys(streams, ">"),
                                            count=count - len(taken), block=block_ms or None)
            # RESP3 answers a dict, RESP2 a list of [stream, entries] (redis-py's XREADGROUP).
            items: Any = reply.items() if isinstance(reply, dict) else (reply or [])
            taken += [(stream, entry_id, fields, 1)
                      for stream, entries in items for entry_id, fields in entries]
        return self._deliveries(taken, group)

    def _ensure_groups(self, streams: list[str], group: str) -> None:
        missing = [s for s in streams if (s, group) not in self._groups]
        if not missing:
            return
        pipe = self._client.pipeline(transaction=False)
        for stream in missing:
            pipe.xgroup_create(stream, group, id="0", mkstream=True)
        for stream, reply in zip(missing, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(reply, Exception) and reply_code(reply) != "BUSYGROUP":
                raise reply
            self._groups.add((stream, group))

    def _claim_expired(self, streams, group, consumer, count) -> list[tuple[str, str, Any, int]]:
        idle_ms = int(self.visibility_timeout * 1000)
        pipe = self._client.pipeline(transaction=False)
        for stream in streams:
            pipe.xautoclaim(stream, group, consumer, idle_ms,
                            start_id=self._cursors.get((stream, group), "0-0"), count=count)
        claimed: list[tuple[str, str, Any]] = []  # fields: a dict, or None for a deleted entry
        for stream, reply in zip(streams, pipe.execute(), strict=True):
            cursor, entries, *rest = reply
            self._cursors[(stream, group)] = cursor
            if rest and rest[0]:
                log.warning("bus.pending_entries_trimmed", stream=stream, group=group,
                            entry_ids=rest[0], hint="entries pending longer than retention allows")
            claimed += [(stream, entry_id, fields) for entry_id, fields in entries]
        if not claimed:
            return []
        pipe = self._client.pipeline(transaction=False)
        for stream, entry_id, _ in claimed:
            pipe.xpending_range(stream, group, min=entry_id, max=entry_id, count=1)
        attempts = [rows[0]["times_delivered"] if rows else 2 for rows in pipe.execute()]
        return [(*entry, n) for entry, n in zip(claimed, attempts, strict=True)]

    def _deliveries(self, taken: list[tuple], group: str) -> list[Delivery]:
        out = []
        for stream, entry_id, fields, attempts in taken:
            payload = fields.get("payload") if isinstance(fields, dict) else None
            if payload is None:
                log.warning("bus.malformed_entry_dead_lettered", stream=stream, group=group,
                            entry_id=entry_id, fields=fields)
                bad = Delivery(stream, entry_id, json.dumps(fields), attempts)
                self.dead_letter(bad, group, "malformed entry: no payload field")
                continue
            out.append(Delivery(stream, entry_id, payload, attempts))
        return out

    # -- acknowledgement and inspection ------------------------------------------------------

    def ack(self, stream, group, entry_id):
        """See ``Bus.ack`` (``XACK``); acknowledging twice is harmless."""
        with self._errors(f"ack on {stream}"):
            self._client.xack(stream, group, entry_id)

    def ack_many(self, stream, group, entry_ids):
        """See ``Bus.ack_many``: one ``XACK`` with every id."""
        if entry_ids:
            with self._errors(f"ack on {stream}"):
                self._client.xack(stream, group, *entry_ids)

    def dead_letter(self, delivery, group, reason):
        """See ``Bus.dead_letter``: ``XADD {stream}:dead`` and ``XACK`` in one ``MULTI``.

        The dead entry's payload is JSON ``{"entry_id", "group", "reason", "payload",
        "attempts"}``, as in ``SqliteBus``.
        """
        record = {"entry_id": delivery.entry_id, "group": group, "reason": reason,
                  "payload": delivery.payload, "attempts": delivery.attempts}
        with self._errors(f"dead-letter from {delivery.stream}"):
            pipe = self._client.pipeline(transaction=True)
            pipe.xadd(f"{delivery.stream}:dead", {"payload": json.dumps(record)},
                      maxlen=self.retention, approximate=True)
            pipe.xack(delivery.stream, group, delivery.entry_id)
            pipe.execute()

    def delete_stream(self, stream):
        """See ``Bus.delete_stream``: ``UNLINK`` (the memory is freed in the background)."""
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", stream) + ":idem:*"
        with self._errors(f"delete {stream}"):
            keys = [stream, f"{stream}:dead", *self._client.scan_iter(match=pattern, count=1000)]
            for start in range(0, len(keys), 1000):
                self._client.unlink(*keys[start:start + 1000])
        self._groups = {(s, g) for s, g in self._groups if s != stream}
        self._cursors = {(s, g): c for (s, g), c in self._cursors.items() if s != stream}

    def dead_letter_streams(self):
        """See ``Bus.dead_letter_streams``: ``SCAN MATCH *:dead TYPE stream`` (an admin user)."""
        with self._errors("list dead-letter streams"):
            streams = sorted(set(self._client.scan_iter(match="*:dead", count=1000, _type="STREAM")))
            pipe = self._client.pipeline(transaction=False)
            for stream in streams:
                pipe.xlen(stream)
            # XDEL leaves an emptied stream's key behind.
            return [s for s, n in zip(streams, pipe.execute(), strict=True) if n] if streams else []

    def entries(self, stream, count=100):
        """See ``Bus.entries`` (``XRANGE - + COUNT``)."""
        with self._errors(f"range {stream}"):
            rows: list[tuple[str, dict[str, str]]] = self._client.xrange(stream, "-", "+", count=count)  # type: ignore[assignment]
        return [(entry_id, fields.get("payload", json.dumps(fields))) for entry_id, fields in rows]

    def remove(self, stream, entry_id):
        """See ``Bus.remove`` (``XDEL``); a malformed id is not there."""
        if not re.fullmatch(r"\d+-\d+", str(entry_id)):
            return False
        with self._errors(f"remove from {stream}"):
            return int(self._client.xdel(stream, entry_id)) > 0

    def pending_count(self, stream, group):
        """See ``Bus.pending_count`` (``XPENDING`` summary); 0 when the group does not exist."""
        with self._errors(f"count pending on {stream}"):
            try:
                return int(self._client.xpending(stream, group)["pending"])
            except redis.ResponseError as exc:
                if reply_code(exc) == "NOGROUP" or "no such key" in str(exc):
                    return 0
                raise

    def length(self, stream):
        """See ``Bus.length`` (``XLEN``)."""
        with self._errors(f"measure {stream}"):
            return int(self._client.xlen(stream))

    def count_since(self, stream, since):
        """See ``Bus.count_since`` (``XRANGE {since in ms} +``, ids only kept)."""
        with self._errors(f"range {stream}"):
            entries: list = self._client.xrange(stream, f"{int(since * 1000)}-0", "+")  # type: ignore[assignment]
            return len(entries)

    def ping(self):
        """See ``Bus.ping``; raises ``BusAuthError`` when the credentials are rejected."""
        with self._errors("ping"):
            self._client.ping()

    def close(self):
        """Close the client's connections."""
        self._client.close()
